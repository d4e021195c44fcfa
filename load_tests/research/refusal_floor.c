/* The least any server pays to refuse a request over loopback TCP: the floor for
 * load_tests/research/refusal_floor.py (built by bare_refuser.py with `cc -O2` at run time; not the server).
 *
 * One thread, epoll, level-triggered, keep-alive connections on 127.0.0.1:PORT. Each read is
 * framed into HTTP/1.1 requests by their Content-Length (a request split over reads waits for
 * the rest) and every complete request is answered with the same canned 503, all answers of
 * one read in one write. A short write keeps the rest and waits for EPOLLOUT before reading
 * more. EOF, an error, or a request larger than the buffer closes the connection.
 *
 *     cc -O2 -Wall -o refusal_floor load_tests/research/refusal_floor.c && ./refusal_floor 8000
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char REPLY[] =
    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    "content-length: 27\r\n\r\n{\"error\": \"overloaded now\"}";
#define REPLY_LEN (sizeof REPLY - 1)
#define MAXFD 65536
#define INBUF 65536   /* one request's head and body must fit */
#define OUTBUF 262144 /* answers written at once (a read with more writes as this fills) */

struct conn {
  char in[INBUF];
  size_t in_len;
  char *out; /* unsent answers after a short write (NULL: none) */
  size_t out_off, out_len;
};

static struct conn *conns[MAXFD];
static char out[OUTBUF];

/* Bytes of the complete request at the start of buf (head and body), 0 while incomplete, -1 if bad. */
static long request_length(const char *buf, size_t len) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  if (!end) return 0;
  long body = 0;
  for (const char *line = memchr(buf, '\n', end - buf); line && line < end; line = memchr(line, '\n', end - line)) {
    line++; /* the start of a header line */
    if (end - line >= 15 && strncasecmp(line, "content-length:", 15) == 0) {
      char *stop;
      body = strtol(line + 15, &stop, 10);
      if (body < 0 || stop == line + 15) return -1;
    }
  }
  long total = (end - buf) + 4 + body;
  return (size_t)total <= len ? total : 0;
}

static void drop(int ep, int fd) {
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  free(conns[fd]->out);
  free(conns[fd]);
  conns[fd] = NULL;
}

/* Send data (the connection's own pending answers when pending); 0 when all went, 1 when some waits
 * for EPOLLOUT (reading stops meanwhile), -1 on error. */
static int flush(int ep, int fd, const char *data, size_t len, int pending) {
  struct conn *c = conns[fd];
  size_t sent = 0;
  while (sent < len) {
    ssize_t w = send(fd, data + sent, len - sent, MSG_NOSIGNAL);
    if (w > 0) {
      sent += (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return -1;
    }
  }
  if (sent == len) {
    if (pending) {
      free(c->out);
      c->out = NULL;
      c->out_off = c->out_len = 0;
      struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
      return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) ? -1 : 0;
    }
    return 0;
  }
  if (pending) {
    c->out_off += sent;
    return 1;
  }
  char *rest = malloc(len - sent);
  if (!rest) return -1;
  memcpy(rest, data + sent, len - sent);
  c->out = rest;
  c->out_off = 0;
  c->out_len = len - sent;
  struct epoll_event e = {.events = EPOLLOUT, .data.fd = fd};
  return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) ? -1 : 1;
}

/* Answer every complete request in the buffer; 0, or -1 when the connection is to close. */
static int answer(int ep, int fd) {
  struct conn *c = conns[fd];
  size_t off = 0, w = 0;
  int waiting = 0;
  for (;;) {
    long n = request_length(c->in + off, c->in_len - off);
    if (n < 0) return -1;
    if (n > 0) {
      off += (size_t)n;
      memcpy(out + w, REPLY, REPLY_LEN);
      w += REPLY_LEN;
    }
    if (w && (n == 0 || w + REPLY_LEN > OUTBUF)) { /* all framed, or the answers fill the buffer */
      int f = flush(ep, fd, out, w, 0);
      if (f < 0) return -1;
      w = 0;
      waiting = f; /* the rest is framed after EPOLLOUT drains this */
    }
    if (n == 0 || waiting) break;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  return !waiting && c->in_len == INBUF ? -1 : 0; /* full with no complete request: too large */
}

static void readable(int ep, int fd) {
  struct conn *c = conns[fd];
  ssize_t r = read(fd, c->in + c->in_len, INBUF - c->in_len);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (r <= 0) { /* EOF or error */
    drop(ep, fd);
    return;
  }
  c->in_len += (size_t)r;
  if (answer(ep, fd) < 0) drop(ep, fd);
}

static void writable(int ep, int fd) {
  struct conn *c = conns[fd];
  int f = flush(ep, fd, c->out + c->out_off, c->out_len - c->out_off, 1);
  if (f < 0 || (f == 0 && answer(ep, fd) < 0)) drop(ep, fd);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (ls < 0) {
    perror("socket");
    return 1;
  }
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1])),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) {
    perror("bind/listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev)) {
    perror("epoll");
    return 1;
  }
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
          if (c >= MAXFD || !(conns[c] = calloc(1, sizeof(struct conn)))) {
            close(c);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &e)) drop(ep, c);
        }
        continue;
      }
      if (!conns[fd]) continue;
      if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
        drop(ep, fd);
      } else if (conns[fd]->out) {
        if (evs[i].events & EPOLLOUT) writable(ep, fd);
      } else if (evs[i].events & EPOLLIN) {
        readable(ep, fd);
      }
    }
  }
}
