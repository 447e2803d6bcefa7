/* Test program for the preload tracer: signals, exit from a thread, vfork.
 *
 *   trace_sig FILE signal       20000 preads of 4 KiB while a 100 us SIGALRM timer's
 *                               handler does 16-byte preads; prints the handler count
 *   trace_sig FILE thread-exit  1000 preads in main, then a thread does 10 preads and
 *                               calls exit(5) while main waits in pthread_join
 *   trace_sig FILE vfork        vfork + exec of `cat FILE`, then one pread in the parent */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_fd;
static volatile sig_atomic_t g_hits;

static void on_alarm(int sig) {
  (void)sig;
  char b[16];
  if (pread(g_fd, b, 16, 0) == 16) g_hits++;
}

static void* exiter(void* arg) {
  (void)arg;
  char b[4096];
  for (int i = 0; i < 10; ++i)
    if (pread(g_fd, b, 4096, 0) != 4096) abort();
  exit(5);
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  g_fd = open(argv[1], O_RDONLY);
  if (g_fd < 0) return 10;
  char b[4096];
  if (strcmp(argv[2], "signal") == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 100}, {0, 100}};
    setitimer(ITIMER_REAL, &it, NULL);
    for (int i = 0; i < 20000; ++i)
      if (pread(g_fd, b, 4096, 4096) != 4096) return 11;
    struct itimerval off;
    memset(&off, 0, sizeof(off));
    setitimer(ITIMER_REAL, &off, NULL);
    printf("%d\n", (int)g_hits);
    return 0;
  }
  if (strcmp(argv[2], "thread-exit") == 0) {
    for (int i = 0; i < 1000; ++i)
      if (pread(g_fd, b, 4096, 4096) != 4096) return 11;
    pthread_t th;
    pthread_create(&th, NULL, exiter, NULL);
    pthread_join(th, NULL);
    return 12; /* not reached */
  }
  if (strcmp(argv[2], "vfork") == 0) {
    pid_t pid = vfork();
    if (pid == 0) {
      execlp("cat", "cat", argv[1], (char*)NULL);
      _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (pread(g_fd, b, 100, 0) != 100) return 13;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 14;
  }
  return 2;
}
