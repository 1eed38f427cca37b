// One session over a WebSocket that survives drops: it reconnects with
// backoff, resumes output after the last event it saw, and sends again the
// audio the service had not stored yet. docs/protocol.md is the contract.

// Close codes after which reconnecting cannot help.
const FINAL_CLOSES = new Set([4400, 4401, 4403, 4404, 4410]);
const MAX_BACKOFF_MS = 10000;

export class SessionStream {
  constructor({ url, token, onEvent, onState, onNotice }) {
    this.url = url;
    this.token = token;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.onNotice = onNotice || (() => {});
    this.lastEventId = 0;
    this.epoch = null;
    this.ready = null;
    this.socket = null;
    this.live = false;
    this.stopped = false;
    this.attempts = 0;
    this.reconnects = 0;
    // Input the service has not acknowledged, by sample position.
    this.inputPosition = 0;
    this.unacked = [];
    this.endUnconfirmed = false;
    this.audioHeader = null;
  }

  connect() {
    this.live = false;
    this.onState(this.attempts ? "reconnecting" : "connecting");
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      const hello = { type: "hello", token: this.token, last_event_id: this.lastEventId };
      if (this.epoch) hello.epoch = this.epoch;
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = (message) => this.receive(socket, message.data);
    socket.onclose = (close) => this.closed(socket, close.code, close.reason);
    this.socket = socket;
  }

  receive(socket, data) {
    if (typeof data !== "string") {
      const header = this.audioHeader;
      this.audioHeader = null;
      if (header) this.deliver(header, data);
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "audio") {
      this.audioHeader = message;
      return;
    }
    switch (message.type) {
      case "ready":
        this.started(socket, message);
        return;
      case "ack":
        this.acknowledge(message.input_samples);
        return;
      case "error":
        this.onNotice(message);
        return;
      case "recovery_impossible":
        this.lastEventId = message.last_event_id;
        this.epoch = message.epoch;
        this.onNotice(message);
        return;
      case "session_closed":
        this.stopped = true;
        this.onState("closed");
        return;
      default:
        this.deliver(message, null);
    }
  }

  started(socket, ready) {
    this.ready = ready;
    this.epoch = ready.epoch;
    this.live = true;
    this.attempts = 0;
    this.onState("live");
    if (ready.role === "speaker") this.resend(ready.input_samples);
  }

  deliver(event, audio) {
    // A replay after a reconnect may repeat what arrived just before the drop.
    if (typeof event.id === "number") {
      if (event.id <= this.lastEventId) return;
      this.lastEventId = event.id;
    }
    if (event.type === "end_of_stream") this.endUnconfirmed = false;
    this.onEvent(event, audio);
  }

  closed(socket, code, reason) {
    if (socket !== this.socket) return;
    this.live = false;
    if (this.stopped || FINAL_CLOSES.has(code)) {
      this.stopped = true;
      this.onState("closed", code, reason);
      return;
    }
    const backoff = Math.min(MAX_BACKOFF_MS, 250 * 2 ** this.attempts);
    this.attempts += 1;
    this.reconnects += 1;
    this.onState("reconnecting", code, reason);
    setTimeout(() => this.connect(), backoff * (0.5 + Math.random() / 2));
  }

  sendAudio(pcm) {
    this.unacked.push({ position: this.inputPosition, pcm });
    this.inputPosition += pcm.length;
    if (this.live) this.socket.send(pcm.buffer);
  }

  end() {
    this.endUnconfirmed = true;
    if (this.live) this.socket.send(JSON.stringify({ type: "end" }));
  }

  addTarget(language) {
    if (this.live) this.socket.send(JSON.stringify({ type: "add_target", language }));
  }

  acknowledge(stored) {
    while (this.unacked.length) {
      const first = this.unacked[0];
      if (first.position + first.pcm.length > stored) break;
      this.unacked.shift();
    }
  }

  // The service stores input by sample position: what it has is skipped.
  resend(start) {
    this.acknowledge(start);
    for (const { position, pcm } of this.unacked) {
      const skip = Math.max(0, start - position);
      this.socket.send(pcm.subarray(skip).slice().buffer);
    }
    if (this.endUnconfirmed) this.socket.send(JSON.stringify({ type: "end" }));
  }

  // Drops the connection as a network would; the stream reconnects.
  drop() {
    if (this.socket) this.socket.close(4000, "dropped");
  }

  close() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000);
  }
}
