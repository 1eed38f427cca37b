// Runs on the audio thread: hands every block of microphone samples to the
// page, which turns them into PCM16 chunks for the session.
class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) {
      this.port.postMessage(channel.slice(0));
    }
    return true;
  }
}

registerProcessor("tolk-capture", CaptureProcessor);
