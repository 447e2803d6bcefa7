/* Test program for the preload tracer (tests/test_trace.py compiles and runs it).
 *
 *   trace_prog DATA MAPFILE
 *
 * Does a fixed sequence of calls whose events the test knows exactly: positional
 * reads, lseek, dup, readv, stdio, two threads doing pread, a forked child doing
 * pread, mmap of MAPFILE touching pages 1 and 3 (MADV_RANDOM: no read-around),
 * failing calls whose errno it prints, and exits with status 3. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_fd;
static char g_buf[65536];

static void* worker(void* arg) {
  long i = (long)arg;
  char b[4096];
  if (pread(g_fd, b, 4096, 4096 * (i + 1)) != 4096) abort();
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  long page = sysconf(_SC_PAGESIZE);
  g_fd = open(argv[1], O_RDONLY);
  if (g_fd < 0) return 10;
  if (pread(g_fd, g_buf, 4096, 0) != 4096) return 11;
  if (read(g_fd, g_buf, 100) != 100) return 12;
  if (read(g_fd, g_buf, 100) != 100) return 13;
  if (lseek(g_fd, 8192, SEEK_SET) != 8192) return 14;
  int d = dup(g_fd);
  if (read(d, g_buf, 50) != 50) return 15; /* shares the position: offset 8192 */
  struct iovec iov[2] = {{g_buf, 10}, {g_buf + 10, 20}};
  if (readv(g_fd, iov, 2) != 30) return 16; /* offset 8242 */
  struct stat sb;
  if (fstat(d, &sb) != 0) return 17;
  close(d);

  pthread_t th[2];
  for (long i = 0; i < 2; ++i) pthread_create(&th[i], NULL, worker, (void*)i);
  for (int i = 0; i < 2; ++i) pthread_join(th[i], NULL);

  pid_t pid = fork();
  if (pid == 0) {
    if (pread(g_fd, g_buf, 10, 12345) != 10) _exit(20);
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return 21;

  /* errno behaviour on a tracked descriptor and on a closed one */
  errno = 0;
  char* volatile nowhere = NULL; /* hides the bad buffer from the compiler */
  ssize_t r = read(g_fd, nowhere, 10);
  printf("read(NULL) = %zd errno=%d\n", r, errno);
  errno = 0;
  r = pread(g_fd, g_buf, 10, -1);
  printf("pread(-1) = %zd errno=%d\n", r, errno);
  errno = 0;
  r = read(1000, g_buf, 10);
  printf("read(1000) = %zd errno=%d\n", r, errno);
  errno = 0;
  int fd2 = open("/nonexistent/cmio-trace-test", O_RDONLY);
  printf("open(missing) = %d errno=%d\n", fd2, errno);
  errno = 0;
  fd2 = open("/cmio-untraced-missing", O_RDONLY); /* outside every prefix: no event */
  printf("open(untraced missing) = %d errno=%d\n", fd2, errno);
  close(g_fd);

  FILE* f = fopen(argv[1], "rb");
  if (f == NULL) return 30;
  if (fread(g_buf, 1, 1000, f) != 1000) return 31;
  fclose(f);

  int mfd = open(argv[2], O_RDONLY);
  if (mfd < 0) return 40;
  unsigned char* p = mmap(NULL, 4 * page, PROT_READ, MAP_PRIVATE, mfd, 0);
  if (p == MAP_FAILED) return 41;
  if (madvise(p, 4 * page, MADV_RANDOM) != 0) return 42;
  close(mfd);
  volatile unsigned char sum = 0;
  sum += p[1 * page];
  sum += p[3 * page + 7];
  munmap(p, 4 * page);
  printf("done %d\n", (int)(sum & 0));
  fflush(stdout);
  return 3;
}
