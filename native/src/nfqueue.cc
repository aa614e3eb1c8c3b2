// One NFQUEUE queue, bound through libmnl + libnetfilter_queue's netlink helpers. Packets are read
// on the Node event loop when the netlink socket becomes readable. Given a WarmHandshakes table, the
// queue lets it decide each packet first (warm handshakes never enter JS); the rest are handed to JS
// one by one, and JS answers each with verdict(id, verdict, mark?, packet?) — synchronously or later. A packet that
// never gets a verdict stays queued in the kernel (and counts against the queue length), so the
// JS side must always answer; if the JS callback throws, the packet is dropped (fail closed) and
// the error is raised as an uncaught exception.
#include "nfqueue.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <sys/socket.h>
#include <uv.h>

#include <cerrno>
#include <ctime>
#include <string>
#include <vector>

#include "errors.h"
#include "warm_handshake_napi.h"

namespace sigil {
namespace {

const size_t kBufferSize = 0xffff + (MNL_SOCKET_BUFFER_SIZE / 2);
constexpr int kMaxMessagesPerWakeup = 256;

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

class NfQueue : public Napi::ObjectWrap<NfQueue> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NfQueue",
                       {
                           InstanceMethod<&NfQueue::Verdict>("verdict"),
                           InstanceMethod<&NfQueue::Stats>("stats"),
                           InstanceMethod<&NfQueue::Close>("close"),
                       });
  }

  // new NfQueue(queueNumber, { maxLength, failOpen, receiveBuffer }, onPacket(id, hook, family, mark, packet), warm?)
  explicit NfQueue(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<NfQueue>(info), env_(info.Env()), context_(info.Env(), "sigil.nfqueue"), buf_(kBufferSize) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || info.Length() > 4 || !info[0].IsNumber() || !info[1].IsObject() || !info[2].IsFunction()) {
      throw Napi::TypeError::New(env, "new NfQueue(queue: number, options: object, onPacket: function, warm?: WarmHandshakes)");
    }
    if (info.Length() == 4 && !info[3].IsUndefined()) {
      warm_ = &UnwrapWarmHandshakes(info[3]);
      warmRef_ = Napi::Persistent(info[3].As<Napi::Object>());
    }
    const int64_t queue = info[0].As<Napi::Number>().Int64Value();
    if (queue < 0 || queue > 65535) throw Napi::RangeError::New(env, "queue number must be 0..65535");
    queue_ = static_cast<uint16_t>(queue);
    Napi::Object options = info[1].As<Napi::Object>();
    const uint32_t maxLength = options.Has("maxLength") ? options.Get("maxLength").As<Napi::Number>().Uint32Value() : 1024;
    const bool failOpen = options.Has("failOpen") && options.Get("failOpen").ToBoolean().Value();
    const int receiveBuffer = options.Has("receiveBuffer") ? options.Get("receiveBuffer").As<Napi::Number>().Int32Value() : 4 << 20;
    onPacket_ = Napi::Persistent(info[2].As<Napi::Function>());

    nl_ = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl_) throw SyscallError(env, "socket", errno, "NETLINK_NETFILTER");
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
      const int err = errno;
      Release();
      throw SyscallError(env, "bind", err, "netlink socket");
    }
    portid_ = mnl_socket_get_portid(nl_);
    const int fd = mnl_socket_get_fd(nl_);
    // Large receive buffer so bursts of SYNs are not lost while JS is busy; root may exceed rmem_max.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &receiveBuffer, sizeof(receiveBuffer)) != 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, sizeof(receiveBuffer));
    }

    // Bind the queue, then configure copy mode, length and flags; each step acknowledged so a busy
    // queue (EBUSY: another process owns it) or missing privileges (EPERM) surface here.
    Configure(env, [&](nlmsghdr* nlh) { nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND); }, "bind queue");
    Configure(env, [&](nlmsghdr* nlh) { nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 0xffff); }, "copy mode");
    Configure(env, [&](nlmsghdr* nlh) { nfq_nlmsg_cfg_put_qmaxlen(nlh, maxLength); }, "queue length");
    if (failOpen) {
      Configure(env,
                [&](nlmsghdr* nlh) {
                  mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_FAIL_OPEN));
                  mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_FAIL_OPEN));
                },
                "fail-open flag");
    }

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t;
    poll_->data = this;
    uv_poll_init(loop, poll_, fd);
    uv_poll_start(poll_, UV_READABLE, &NfQueue::OnReadable);
    Ref();  // stay alive while the poll handle may call back
    // A worker thread can be terminated with its queue still bound: the poll handle must be closed
    // while its loop still exists, or tearing the thread down touches a freed loop (SIGSEGV).
    napi_add_env_cleanup_hook(env, &NfQueue::OnEnvTeardown, this);
    cleanupHook_ = true;
  }

  ~NfQueue() override {
    RemoveCleanupHook();
    Release();
  }

 private:
  template <typename Fill>
  void Configure(Napi::Env env, Fill fill, const char* what) {
    std::vector<char> msg(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = nfq_nlmsg_put(msg.data(), NFQNL_MSG_CONFIG, queue_);
    nlh->nlmsg_flags |= NLM_F_ACK;
    fill(nlh);
    const uint32_t seq = ++seq_;
    nlh->nlmsg_seq = seq;
    if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) {
      const int err = errno;
      Release();
      throw SyscallError(env, "sendto", err, std::string("NFQUEUE ") + what + " for queue " + std::to_string(queue_));
    }
    const ssize_t n = mnl_socket_recvfrom(nl_, msg.data(), msg.size());
    if (n < 0 || mnl_cb_run(msg.data(), static_cast<size_t>(n), seq, portid_, nullptr, nullptr) < 0) {
      const int err = errno;
      Release();
      std::string context = std::string("NFQUEUE ") + what + " for queue " + std::to_string(queue_);
      if (err == EBUSY) context += " (another process is bound to this queue)";
      if (err == EPERM) context += " (needs CAP_NET_ADMIN)";
      throw SyscallError(env, "netlink", err, context);
    }
  }

  static void OnEnvTeardown(void* arg) {
    auto* self = static_cast<NfQueue*>(arg);
    self->cleanupHook_ = false;
    self->Release(/*teardown=*/true);
  }

  void RemoveCleanupHook() {
    if (!cleanupHook_) return;
    napi_remove_env_cleanup_hook(env_, &NfQueue::OnEnvTeardown, this);
    cleanupHook_ = false;
  }

  static void OnReadable(uv_poll_t* handle, int status, int /*events*/) {
    auto* self = static_cast<NfQueue*>(handle->data);
    if (status < 0) {
      ++self->receiveErrors_;
      return;
    }
    Napi::HandleScope scope(self->env_);
    self->Drain();
  }

  void Drain() {
    for (int i = 0; i < kMaxMessagesPerWakeup && nl_; ++i) {
      const ssize_t n = recv(mnl_socket_get_fd(nl_), buf_.data(), buf_.size(), MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        // ENOBUFS: the kernel dropped messages because we were too slow; keep reading.
        if (errno == ENOBUFS) ++overruns_;
        else ++receiveErrors_;
        continue;
      }
      mnl_cb_run(buf_.data(), static_cast<size_t>(n), 0, portid_, &NfQueue::OnMessage, this);
    }
  }

  static int OnMessage(const nlmsghdr* nlh, void* data) {
    auto* self = static_cast<NfQueue*>(data);
    nlattr* attr[NFQA_MAX + 1] = {};
    if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR]) {
      ++self->receiveErrors_;
      return MNL_CB_OK;
    }
    auto* ph = static_cast<nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
    const uint32_t id = ntohl(ph->packet_id);
    ++self->received_;
    const uint32_t mark = attr[NFQA_MARK] ? ntohl(mnl_attr_get_u32(attr[NFQA_MARK])) : 0;
    if (self->warm_ && attr[NFQA_PAYLOAD] && self->DecideWarm(id, ph->hook, mark, attr[NFQA_PAYLOAD])) return MNL_CB_OK;
    Napi::Env env = self->env_;
    // Positional arguments rather than an object with named properties: cheaper to create on every
    // handshake packet; the typed loader (index.ts) assembles the QueuedPacket.
    Napi::Value packet = attr[NFQA_PAYLOAD]
                             ? Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(mnl_attr_get_payload(attr[NFQA_PAYLOAD])),
                                                           mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]))
                             : Napi::Buffer<uint8_t>::New(env, 0);
    try {
      self->onPacket_.MakeCallback(env.Global(),
                                   {Napi::Number::New(env, id), Napi::Number::New(env, ph->hook),
                                    Napi::Number::New(env, ntohs(ph->hw_protocol) == 0x86dd ? 6 : 4), Napi::Number::New(env, mark), packet},
                                   self->context_);
    } catch (const Napi::Error& e) {
      ++self->callbackErrors_;
      self->SendVerdict(id, NF_DROP, nullptr, nullptr, 0);
      napi_fatal_exception(env, e.Value());
    }
    return MNL_CB_OK;
  }

  // The warm table's decision, sent at once; false when the packet is JS's to decide.
  bool DecideWarm(uint32_t id, int hook, uint32_t mark, const nlattr* payload) {
    const uint64_t started = MonotonicNs();
    WarmVerdict v = warm_->Handle(static_cast<const uint8_t*>(mnl_attr_get_payload(payload)), mnl_attr_get_payload_len(payload), hook,
                                  mark, WallClockMs());
    if (!v.handled) return false;
    const uint64_t decided = MonotonicNs();
    // A verdict that cannot be sent is counted and followed by a plain drop (fail closed), as JS's
    // path does; if that cannot be sent either, the packet waits in the kernel until the queue is
    // unbound and the connection's retransmission starts over.
    if (SendVerdict(id, v.verdict, v.setMark ? &v.mark : nullptr, v.replace ? v.packet.data() : nullptr, v.packet.size()) != 0) {
      ++verdictErrors_;
      SendVerdict(id, NF_DROP, nullptr, nullptr, 0);
    }
    warm_->AddTiming(v.kind, decided - started, MonotonicNs() - decided);
    return true;
  }

  int SendVerdict(uint32_t id, int verdict, const uint32_t* mark, const uint8_t* data, size_t len) {
    if (!nl_) return ENOTCONN;
    std::vector<char>& out = verdictBuf_;
    if (out.size() < len + MNL_SOCKET_BUFFER_SIZE) out.resize(len + MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = nfq_nlmsg_put(out.data(), NFQNL_MSG_VERDICT, queue_);
    nfq_nlmsg_verdict_put(nlh, static_cast<int>(id), verdict);
    if (mark) nfq_nlmsg_verdict_put_mark(nlh, *mark);
    if (data) nfq_nlmsg_verdict_put_pkt(nlh, data, static_cast<uint32_t>(len));
    if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) return errno;
    switch (verdict) {
      case NF_ACCEPT: ++accepted_; break;
      case NF_DROP: ++dropped_; break;
      case NF_REPEAT: ++repeated_; break;
      default: break;
    }
    if (data) ++modified_;
    return 0;
  }

  // verdict(id, verdict: 0 drop | 1 accept | 4 repeat, mark?: number, packet?: Buffer)
  Napi::Value Verdict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
      throw Napi::TypeError::New(env, "verdict(id: number, verdict: number, mark?: number, packet?: Buffer)");
    }
    const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    const int verdict = info[1].As<Napi::Number>().Int32Value();
    if (verdict != NF_DROP && verdict != NF_ACCEPT && verdict != NF_REPEAT) {
      throw Napi::RangeError::New(env, "verdict must be 0 (drop), 1 (accept) or 4 (repeat)");
    }
    uint32_t markValue = 0;
    const uint32_t* mark = nullptr;
    if (info.Length() > 2 && info[2].IsNumber()) {
      markValue = info[2].As<Napi::Number>().Uint32Value();
      mark = &markValue;
    }
    const uint8_t* data = nullptr;
    size_t len = 0;
    if (info.Length() > 3 && info[3].IsBuffer()) {
      auto buf = info[3].As<Napi::Buffer<uint8_t>>();
      data = buf.Data();
      len = buf.Length();
      if (len > 0xffff) throw Napi::RangeError::New(env, "packet larger than 65535 bytes");
    }
    const int err = SendVerdict(id, verdict, mark, data, len);
    if (err != 0) throw SyscallError(env, "sendto", err, "NFQUEUE verdict for packet " + std::to_string(id) + " on queue " + std::to_string(queue_));
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("queue", Napi::Number::New(env, queue_));
    o.Set("received", Napi::Number::New(env, static_cast<double>(received_)));
    o.Set("accepted", Napi::Number::New(env, static_cast<double>(accepted_)));
    o.Set("dropped", Napi::Number::New(env, static_cast<double>(dropped_)));
    o.Set("repeated", Napi::Number::New(env, static_cast<double>(repeated_)));
    o.Set("modified", Napi::Number::New(env, static_cast<double>(modified_)));
    o.Set("overruns", Napi::Number::New(env, static_cast<double>(overruns_)));
    o.Set("receiveErrors", Napi::Number::New(env, static_cast<double>(receiveErrors_)));
    o.Set("callbackErrors", Napi::Number::New(env, static_cast<double>(callbackErrors_)));
    o.Set("verdictErrors", Napi::Number::New(env, static_cast<double>(verdictErrors_)));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (nl_) {
      // Unbinding lets the kernel drop (or, with --queue-bypass, accept) what is still queued.
      std::vector<char> msg(MNL_SOCKET_BUFFER_SIZE);
      nlmsghdr* nlh = nfq_nlmsg_put(msg.data(), NFQNL_MSG_CONFIG, queue_);
      nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_UNBIND);
      mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len);
      RemoveCleanupHook();
      Release();
      Unref();
    }
    return info.Env().Undefined();
  }

  // At a worker thread's teardown the loop finishes closing handles after this addon has been
  // unloaded, so no close callback of ours may run then: the handle is closed without one and its
  // few bytes are left to the ending thread.
  void Release(bool teardown = false) {
    if (poll_) {
      uv_poll_stop(poll_);
      if (teardown) {
        uv_close(reinterpret_cast<uv_handle_t*>(poll_), nullptr);
      } else {
        uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      }
      poll_ = nullptr;
    }
    if (nl_) {
      mnl_socket_close(nl_);
      nl_ = nullptr;
    }
  }

  Napi::Env env_;
  Napi::AsyncContext context_;
  Napi::FunctionReference onPacket_;
  mnl_socket* nl_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
  uint16_t queue_ = 0;
  bool cleanupHook_ = false;
  std::vector<char> buf_;
  std::vector<char> verdictBuf_;
  uint64_t received_ = 0, accepted_ = 0, dropped_ = 0, repeated_ = 0, modified_ = 0;
  uint64_t overruns_ = 0, receiveErrors_ = 0, callbackErrors_ = 0, verdictErrors_ = 0;
  WarmHandshakes* warm_ = nullptr;
  Napi::ObjectReference warmRef_;
};

}  // namespace

void RegisterNfQueue(Napi::Env env, Napi::Object exports) { exports.Set("NfQueue", NfQueue::Define(env)); }

}  // namespace sigil
