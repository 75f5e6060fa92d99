/*
 * evsizes: heap bytes that libevent allocates per object sluice creates for
 * a session (mallinfo2 before and after creating N of each): the
 * bufferevent of a socket, enabling it (libevent's per-descriptor map), an
 * event (event_new), timeouts, a rate limit, a first write. Figures for
 * BENCHMARKS.md ("What a session allocates"). Bounded: N socket pairs.
 *
 *   make bench-tools; (ulimit -n 5000; build/evsizes)
 */
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <malloc.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#define N 2000
static size_t used(void){struct mallinfo2 m=mallinfo2();return m.uordblks;}
int main(void){
  struct event_base *b=event_base_new();
  static struct bufferevent *bev[N]; static struct event *ev[N];
  struct timeval tick={0,200000};
  struct ev_token_bucket_cfg *cfg=ev_token_bucket_cfg_new(1,1,1,1,&tick);
  int fds[2*N];
  for(int i=0;i<N;i++){ if(socketpair(AF_UNIX,SOCK_STREAM,0,fds+2*i)) {perror("socketpair (ulimit -n 5000)");return 1;} }
  size_t u0=used();
  for(int i=0;i<N;i++){bev[i]=bufferevent_socket_new(b,fds[2*i],0);}
  size_t u1=used();
  for(int i=0;i<N;i++){bufferevent_enable(bev[i],EV_READ|EV_WRITE);}
  size_t u2=used();
  for(int i=0;i<N;i++){ev[i]=event_new(b,-1,0,NULL,NULL);}
  size_t u3=used();
  for(int i=0;i<N;i++){struct timeval tv={300,0};bufferevent_set_timeouts(bev[i],&tv,&tv);}
  size_t u4=used();
  for(int i=0;i<N;i++){bufferevent_set_rate_limit(bev[i],cfg);}
  size_t u5=used();
  for(int i=0;i<N;i++){bufferevent_write(bev[i],"220 x\r\n",7);} 
  size_t u6=used();
  event_base_loop(b,EVLOOP_NONBLOCK);
  size_t u7=used();
  (void)ev;
  printf("bev_new %zu enable(evmap) %zu event_new %zu timeouts %zu ratelimit %zu write %zu after_loop %zu\n",(u1-u0)/N,(u2-u1)/N,(u3-u2)/N,(u4-u3)/N,(u5-u4)/N,(u6-u5)/N,(u7-u6)/N);
  return 0;}
