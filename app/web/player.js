// Plays synthesized speech segments one after the other, without gaps.

export class Player {
  constructor() {
    this.context = null;
    this.nextStart = 0;
    this.played = 0;
    this.scheduled = 0;
  }

  // Browsers let audio start only after a user gesture: call from a click.
  unlock() {
    if (!this.context) this.context = new AudioContext();
    return this.context.resume();
  }

  play(pcm16, sampleRate) {
    this.unlock();
    const samples = new Int16Array(pcm16);
    const buffer = this.context.createBuffer(1, samples.length, sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    source.onended = () => {
      this.played += 1;
      document.body.dataset.segmentsPlayed = String(this.played);
    };
    const start = Math.max(this.context.currentTime, this.nextStart);
    source.start(start);
    this.nextStart = start + buffer.duration;
    this.scheduled += 1;
  }
}
