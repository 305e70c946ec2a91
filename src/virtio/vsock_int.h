/* virtio-vsock's parts shared by the device (vsock.c: queues and packets) and its host side
 * (vsock_conn.c: the listening socket and one AF_UNIX socket per connection).
 *
 * Thread model: everything below runs on the device's own I/O thread ("vsock-<name>"): the
 * three queues, the listening socket and every connection's socket are sources of its event
 * loop. Only config_read (guest_cid, constant) runs on a vCPU thread. Host sockets are
 * non-blocking; what a slow host reader has not taken waits in the connection's buffer, at most
 * VSOCK_BUF_ALLOC bytes, which is the credit the guest is given (§5.10.6.3): a guest that sends
 * beyond it gets its connection reset. Data from the host is read only while the guest's credit
 * and receive buffers allow, so a slow guest leaves it in the host's socket. */
#ifndef WISP_VIRTIO_VSOCK_INT_H
#define WISP_VIRTIO_VSOCK_INT_H

#include <linux/virtio_vsock.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtio.h"
#include "virtio/vsock.h"

#define VSOCK_RX_QUEUE    0
#define VSOCK_TX_QUEUE    1
#define VSOCK_EVENT_QUEUE 2
#define VSOCK_QUEUE_SIZE  256
#define VSOCK_HOST_CID    2
#define VSOCK_HDR_LEN     44          /* struct virtio_vsock_hdr, packed */
#define VSOCK_MAX_PAYLOAD (64 << 10)  /* per packet, as Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE */
#define VSOCK_BUF_ALLOC   (256 << 10) /* per connection: what the guest may send unread */
#define VSOCK_MAX_CONNS   1024
#define VSOCK_MAX_IOV     64
#define VSOCK_STRAY_MAX   64         /* RSTs for packets that have no connection */
#define VSOCK_LOCAL_PORT0 (1u << 30) /* host ports given to host-initiated connections */
#define VSOCK_LINE_MAX    32         /* "CONNECT 4294967295\n" fits */
#define VSOCK_REQUEST_NS  (2000ull * 1000 * 1000) /* a guest that does not answer a REQUEST */

/* Packets a connection still has to send to the guest, in this order of priority. */
enum vsock_pending {
    VSOCK_SEND_REQUEST = 1 << 0,
    VSOCK_SEND_RESPONSE = 1 << 1,
    VSOCK_SEND_CREDIT = 1 << 2,
    VSOCK_SEND_SHUTDOWN = 1 << 3,
    VSOCK_SEND_RST = 1 << 4, /* last: the connection is freed once it is sent */
};

enum vsock_conn_state {
    VSOCK_CONN_LINE,      /* host-initiated: reading "CONNECT <port>\n" */
    VSOCK_CONN_REQUESTED, /* host-initiated: REQUEST sent, waiting for RESPONSE or RST */
    VSOCK_CONN_OPEN,      /* established */
    VSOCK_CONN_CLOSED,    /* host socket closed; only the pending RST is left to send */
};

struct virtio_vsock;

struct vsock_conn {
    struct virtio_vsock *vs;
    struct vsock_conn *next;     /* vs->conns */
    struct vsock_conn *ctl_next; /* vs->ctl_head: has pending packets */
    bool on_ctl;
    int fd;
    struct evloop_source *src;
    uint32_t armed; /* epoll events src waits for */
    enum vsock_conn_state state;
    uint32_t host_port, guest_port;
    uint64_t requested_ns; /* CLOCK_MONOTONIC when the host's CONNECT became a REQUEST */
    unsigned pending;      /* enum vsock_pending */
    char line[VSOCK_LINE_MAX];
    unsigned line_len;
    /* guest -> host: bytes received and not yet written to the host socket */
    uint8_t *out;
    uint32_t out_start, out_len;
    uint32_t rx_cnt;       /* payload bytes received from the guest */
    uint32_t fwd_cnt;      /* of those, written to the host socket */
    uint32_t fwd_cnt_sent; /* fwd_cnt as the guest last heard it */
    bool guest_shut_send, guest_shut_rcv;
    /* host -> guest */
    uint32_t peer_buf_alloc, peer_fwd_cnt; /* the guest's, from its last packet */
    uint32_t tx_cnt;                       /* payload bytes sent to the guest */
    bool host_eof;                         /* the host socket read end-of-file */
    bool shut_wr_done;                     /* shutdown(SHUT_WR) after the guest's SHUTDOWN */
};

/* An RST for a packet that matched no connection (or was malformed). */
struct vsock_stray {
    uint32_t src_port, dst_port; /* as in the RST sent: host port, guest port */
};

struct virtio_vsock {
    struct virtio_dev vdev; /* first: dev->state */
    const struct virtio_vsock_params *p;
    uint64_t guest_cid;
    struct iothread *thread;
    struct evloop *loop;
    int listen_fd;
    struct evloop_source *listen_src;
    struct evloop_source *request_timer; /* ends REQUESTs the guest leaves unanswered */
    char *bound_path;                    /* the path bound (unlinked at teardown) */
    struct vsock_conn *conns;
    unsigned nr_conns;
    uint32_t next_local_port;
    struct vsock_conn *ctl_head, *ctl_tail;
    struct vsock_stray stray[VSOCK_STRAY_MAX];
    unsigned stray_head, stray_len;
    bool serving;        /* activated and not quiesced: the queues may be touched */
    bool rx_starved;     /* a connection found no receive buffer: re-armed on rx notify */
    bool tx_blocked;     /* the stray ring was full: tx waits for rx to drain it */
    bool host_paused;    /* quiesced or stopped: no socket event is taken */
    bool reset_event;    /* a TRANSPORT_RESET event is owed to the driver (after a restore) */
    bool restored;       /* load() ran: activate owes the event */
    unsigned log_budget; /* malformed-packet lines left to log */
    /* figures (the I/O thread writes them) */
    uint64_t bytes_to_guest, bytes_to_host, packets_dropped;
};

/* vsock_conn.c: the host side, on the I/O thread. */
int vsock_host_listen(struct virtio_vsock *vs, struct wisp_err *err);
void vsock_host_unlisten(struct virtio_vsock *vs);
/* Adds or removes every host-socket event (quiesce/resume, reset). */
void vsock_host_pause(struct virtio_vsock *vs, bool paused);
/* Arms the request timer for the oldest unanswered REQUEST (if any). */
void vsock_request_timer_arm(struct virtio_vsock *vs);
void vsock_conn_update_events(struct vsock_conn *c);
struct vsock_conn *vsock_conn_find(struct virtio_vsock *vs, uint32_t host_port,
                                   uint32_t guest_port);
/* The guest asks for host port `port` from its port `guest_port`: connects to uds_path_port. */
void vsock_conn_guest_request(struct virtio_vsock *vs, uint32_t port, uint32_t guest_port);
/* The guest accepted a host-initiated connection: "OK <port>\n" to the host client. */
void vsock_conn_accepted(struct vsock_conn *c);
/* Payload from the guest for the host socket; false when it exceeds the credit given. */
bool vsock_conn_from_guest(struct vsock_conn *c, const struct iovec *iov, unsigned nr,
                           uint32_t skip, uint32_t len);
void vsock_conn_guest_shutdown(struct vsock_conn *c, uint32_t flags);
/* Closes the host socket; with rst (and a guest that knows the connection) an RST is sent to the
 * guest and the connection is freed after it; else it is freed now: returns true then. */
bool vsock_conn_close(struct vsock_conn *c, bool rst);
/* Frees every connection without telling the guest (reset, restore, teardown). */
void vsock_conn_drop_all(struct virtio_vsock *vs);
void vsock_conn_free(struct vsock_conn *c);
/* The credit the guest gives us: bytes we may still send on c. */
uint32_t vsock_conn_peer_credit(const struct vsock_conn *c);
/* Reads host data into a receive chain's writable part after the header; see vsock.c. */
void vsock_conn_readable(struct vsock_conn *c);

/* vsock.c: towards the guest. */
void vsock_queue_pending(struct vsock_conn *c, unsigned what);
void vsock_queue_stray_rst(struct virtio_vsock *vs, uint32_t host_port, uint32_t guest_port);
/* Sends what is pending (controls first) while receive buffers last. */
void vsock_rx_run(struct virtio_vsock *vs);
/* A data packet: host bytes read from c's socket into a fresh receive chain. 1 sent, 0 nothing
 * to send now (EAGAIN, end of file), -1 no receive buffer. */
int vsock_rx_data(struct vsock_conn *c);

#endif
