// The microphone as a stream of PCM16 chunks at the audio context's rate.

const CHUNK_S = 0.04;

export class Microphone {
  constructor(onChunk) {
    this.onChunk = onChunk;
    this.context = null;
    this.stream = null;
    this.pending = [];
    this.pendingLength = 0;
  }

  get sampleRate() {
    return this.context.sampleRate;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("/web/capture-worklet.js");
    const source = this.context.createMediaStreamSource(this.stream);
    const capture = new AudioWorkletNode(this.context, "tolk-capture");
    capture.port.onmessage = (event) => this.collect(event.data);
    source.connect(capture);
    this.chunkSamples = Math.round(this.context.sampleRate * CHUNK_S);
  }

  collect(block) {
    this.pending.push(block);
    this.pendingLength += block.length;
    if (this.pendingLength >= this.chunkSamples) {
      this.flush();
    }
  }

  flush() {
    if (!this.pendingLength) return;
    const pcm = new Int16Array(this.pendingLength);
    let offset = 0;
    for (const block of this.pending) {
      for (let i = 0; i < block.length; i++) {
        const sample = Math.max(-1, Math.min(1, block[i]));
        pcm[offset++] = sample < 0 ? sample * 0x8000 : sample * 0x7fff;
      }
    }
    this.pending = [];
    this.pendingLength = 0;
    this.onChunk(pcm);
  }

  async stop() {
    this.flush();
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.context) await this.context.close();
    this.stream = null;
    this.context = null;
  }
}
