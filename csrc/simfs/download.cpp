#include "download.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <utility>
#include <vector>

namespace simfs {

namespace {

bool write_exact(int fd, const void* p, std::size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_exact(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// The calling thread's wake-up pipe, made on first use (cvmfs2 keeps one per thread in
// its fetcher's thread-local storage).
struct WaitPipe {
  int fd[2] = {-1, -1};
  WaitPipe() {
    if (::pipe2(fd, O_CLOEXEC) != 0) fd[0] = fd[1] = -1;
  }
  ~WaitPipe() {
    if (fd[0] >= 0) ::close(fd[0]);
    if (fd[1] >= 0) ::close(fd[1]);
  }
  WaitPipe(const WaitPipe&) = delete;
  WaitPipe& operator=(const WaitPipe&) = delete;
};

}  // namespace

struct DownloadLoop::Job {
  Transfer* t = nullptr;
  int reply_fd = -1;
};

DownloadLoop::DownloadLoop(bool poll_1ms) : poll_1ms_(poll_1ms) {
  multi_ = curl_multi_init();
  if (multi_ == nullptr) throw std::runtime_error("libcurl: cannot create a multi handle");
  if (::pipe2(jobs_, O_CLOEXEC) != 0) {
    curl_multi_cleanup(multi_);
    throw std::runtime_error("cannot create the download job pipe");
  }
  io_ = std::thread([this] { run(); });
}

DownloadLoop::~DownloadLoop() {
  Job* stop = nullptr;
  if (write_exact(jobs_[1], &stop, sizeof stop)) io_.join();
  else io_.detach();  // cannot happen with a live pipe; never block the unmount
  for (CURL* h : idle_) curl_easy_cleanup(h);
  curl_multi_cleanup(multi_);
  ::close(jobs_[0]);
  ::close(jobs_[1]);
}

void DownloadLoop::perform(Transfer* t) {
  thread_local WaitPipe wait;
  if (wait.fd[0] < 0) {
    t->code = CURLE_OUT_OF_MEMORY;
    return;
  }
  Job job;
  job.t = t;
  job.reply_fd = wait.fd[1];
  Job* p = &job;
  char done = 0;
  if (!write_exact(jobs_[1], &p, sizeof p) || !read_exact(wait.fd[0], &done, 1)) {
    t->code = CURLE_FAILED_INIT;
  }
}

void DownloadLoop::run() {
  int running = 0;
  std::vector<std::pair<CURL*, Job*>> active;
  while (true) {
    curl_waitfd wfd{};
    wfd.fd = jobs_[0];
    wfd.events = CURL_WAIT_POLLIN;
    int numfds = 0;
    // cvmfs2 polls with a 1 ms timeout while any transfer runs (and waits indefinitely
    // otherwise); each timeout is a wake-up of the I/O thread.
    const int timeout_ms = running > 0 ? (poll_1ms_ ? 1 : 100) : 1000;
    if (curl_multi_poll(multi_, &wfd, 1, timeout_ms, &numfds) != CURLM_OK) continue;
    if ((wfd.revents & CURL_WAIT_POLLIN) != 0) {
      Job* job = nullptr;
      if (!read_exact(jobs_[0], &job, sizeof job)) return;
      if (job == nullptr) break;
      CURL* h = nullptr;
      if (!idle_.empty()) {
        h = idle_.back();
        idle_.pop_back();
      } else {
        h = curl_easy_init();
      }
      if (h == nullptr) {
        job->t->code = CURLE_OUT_OF_MEMORY;
        const char one = 1;
        (void)write_exact(job->reply_fd, &one, 1);
      } else {
        curl_easy_reset(h);
        job->t->configure(h);
        curl_easy_setopt(h, CURLOPT_PRIVATE, static_cast<void*>(job));
        curl_multi_add_handle(multi_, h);
        active.emplace_back(h, job);
      }
    }
    curl_multi_perform(multi_, &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* h = msg->easy_handle;
      void* priv = nullptr;
      curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
      auto* job = static_cast<Job*>(priv);
      job->t->code = msg->data.result;
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &job->t->status);
      curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &job->t->total_time_s);
      curl_multi_remove_handle(multi_, h);
      idle_.push_back(h);  // keeps its connection for the next request
      for (std::size_t i = 0; i < active.size(); ++i) {
        if (active[i].first == h) {
          active[i] = active.back();
          active.pop_back();
          break;
        }
      }
      const char one = 1;
      (void)write_exact(job->reply_fd, &one, 1);
    }
  }
  // Unmount: fail whatever is still in flight so no caller waits forever.
  for (const auto& [h, job] : active) {
    curl_multi_remove_handle(multi_, h);
    idle_.push_back(h);
    job->t->code = CURLE_ABORTED_BY_CALLBACK;
    const char one = 1;
    (void)write_exact(job->reply_fd, &one, 1);
  }
}

}  // namespace simfs
