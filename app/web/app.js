// The page: a speaker's microphone, or a listener's view, of one session.
import { Microphone } from "./microphone.js";
import { Player } from "./player.js";
import { SessionStream } from "./session.js";

const $ = (id) => document.getElementById(id);
const player = new Player();
const utterances = new Map();
let stream = null;
let microphone = null;
let session = null;
let pairs = [];
let targets = [];

// For people debugging the page, and for the browser test.
window.tolk = { player, eventIds: [], get stream() { return stream; } };

function setState(state, code) {
  document.body.dataset.state = state;
  const suffix = state === "reconnecting" && stream ? ` (${stream.reconnects})` : "";
  $("state").textContent = state + suffix + (state === "closed" && code ? ` ${code}` : "");
}

function notice(message) {
  if (message.type === "recovery_impossible") {
    $("notice").textContent = "Some earlier output could not be recovered.";
  } else {
    $("notice").textContent = message.message || message.code;
  }
}

function row(number) {
  let entry = utterances.get(number);
  if (!entry) {
    const item = document.createElement("li");
    const source = document.createElement("div");
    source.className = "source partial";
    item.append(source);
    $("utterances").append(item);
    entry = { item, source, translations: new Map() };
    utterances.set(number, entry);
  }
  return entry;
}

function translation(entry, language) {
  let line = entry.translations.get(language);
  if (!line) {
    line = document.createElement("div");
    line.className = "translation";
    line.dataset.language = language;
    entry.item.append(line);
    entry.translations.set(language, line);
  }
  return line;
}

function onEvent(event, audio) {
  window.tolk.eventIds.push(event.id);
  switch (event.type) {
    case "partial":
      row(event.utterance).source.textContent = event.text;
      break;
    case "final": {
      const entry = row(event.utterance);
      entry.source.textContent = event.text;
      entry.source.className = "source final";
      break;
    }
    case "translation":
      translation(row(event.utterance), event.language).textContent = event.text;
      break;
    case "audio":
      if (audio && event.language === $("hear").value) {
        player.play(audio, event.sample_rate);
      }
      break;
    case "target_added":
      addTarget(event.language);
      break;
    case "stage_error":
      $("notice").textContent = `${event.stage} failed for one utterance`;
      break;
  }
}

function addTarget(language) {
  if (targets.includes(language)) return;
  targets.push(language);
  const option = new Option(language, language);
  $("hear").append(option);
  fillAddable();
}

function fillAddable() {
  const source = stream && stream.ready ? stream.ready.source : $("source").value;
  const addable = pairs.filter(([from, to]) => from === source && !targets.includes(to));
  $("add-language").replaceChildren(...addable.map(([, to]) => new Option(to, to)));
  $("add").disabled = addable.length === 0;
}

function open(url, token) {
  stream = new SessionStream({
    url,
    token,
    onEvent,
    onNotice: notice,
    onState: (state, code) => {
      setState(state, code);
      if (state === "live" && stream.ready) {
        stream.ready.targets.forEach(addTarget);
        $("listening").hidden = false;
      }
    },
  });
  stream.connect();
}

function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${path}`;
}

async function loadLanguages() {
  const response = await fetch("/v1/languages");
  pairs = (await response.json()).pairs;
  const sources = [...new Set(pairs.map(([from]) => from))];
  $("source").replaceChildren(...sources.map((code) => new Option(code, code)));
  const fillTargets = () => {
    const choices = pairs.filter(([from]) => from === $("source").value);
    $("target").replaceChildren(...choices.map(([, to]) => new Option(to, to)));
  };
  $("source").onchange = fillTargets;
  fillTargets();
}

async function start() {
  const apiKey = $("api-key").value.trim();
  localStorage.setItem("tolk.apiKey", apiKey);
  $("start").disabled = true;
  try {
    await player.unlock();
    microphone = new Microphone((pcm) => stream && stream.sendAudio(pcm));
    await microphone.start();
    const response = await fetch("/v1/sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
      body: JSON.stringify({
        source: $("source").value,
        targets: [$("target").value],
        sample_rate: microphone.sampleRate,
      }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    session = body;
    $("setup").hidden = true;
    $("controls").hidden = false;
    open(socketUrl(session.websocket_path), session.token);
  } catch (error) {
    $("notice").textContent = `Could not start: ${error.message}`;
    $("start").disabled = false;
    if (microphone) await microphone.stop();
  }
}

async function stop() {
  await microphone.stop();
  stream.end();
  $("stop").disabled = true;
}

async function share() {
  const response = await fetch(`/v1/sessions/${session.session_id}/listeners`, {
    method: "POST",
    headers: { Authorization: `Bearer ${session.token}` },
  });
  const body = await response.json();
  if (!response.ok) {
    $("notice").textContent = body.detail || `HTTP ${response.status}`;
    return;
  }
  // The token rides in the fragment, which browsers never send to a server.
  const link = `${location.origin}/#listen=${body.session_id}.${body.token}`;
  $("share-link").value = link;
  $("share-link").hidden = false;
}

function listen(fragment) {
  const [sessionId, token] = fragment.split(".");
  $("setup").hidden = true;
  document.body.classList.add("listener");
  $("hear").onchange = () => player.unlock();
  open(socketUrl(`/ws/${sessionId}`), token);
}

$("start").onclick = start;
$("stop").onclick = stop;
$("share").onclick = share;
$("add").onclick = () => stream.addTarget($("add-language").value);
$("api-key").value = localStorage.getItem("tolk.apiKey") || "";

loadLanguages()
  .then(() => {
    const match = location.hash.match(/^#listen=(.+)$/);
    if (match) listen(match[1]);
  })
  .catch((error) => {
    $("notice").textContent = `Could not reach the service: ${error.message}`;
  });
