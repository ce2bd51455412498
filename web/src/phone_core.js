// What both web phones share: the page's status, WebRTC statistics and the remote audio.
// Each SIP stack (jssip_phone.js, sipjs_phone.js) sets window.phone to an object with
// register(), call(), answer on incoming calls, hold(), unhold(), hangup() and stats();
// tests drive it through those and read window.phone.status, as the page shows it.

// Every SDP handed to setRemoteDescription, as the SIP stack received it (Chromium's own
// remoteDescription drops attributes it does not know, a=tls-id among them).
export const remoteSdps = [];
if (typeof RTCPeerConnection !== "undefined" && !RTCPeerConnection.prototype.e2aeWrapped) {
  const original = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (description, ...rest) {
    if (description && description.sdp) remoteSdps.push(description.sdp);
    return original.call(this, description, ...rest);
  };
  RTCPeerConnection.prototype.e2aeWrapped = true;
}

export function newStatus(stack) {
  return {
    stack, registration: "unregistered", registerMs: null, call: "idle", setupMs: null,
    direction: "", ice: "", dtls: "", srtpCipher: "", packetsSent: 0, packetsReceived: 0,
    audioLevel: 0, holds: 0, error: "", events: [],
  };
}

export function note(status, text) {
  status.events.push(`${((performance.now()) / 1000).toFixed(3)} ${text}`);
  if (status.events.length > 200) status.events.shift();
  render(status);
}

// Audio stats show a level only once the remote track plays somewhere.
export function playRemote(pc) {
  const audio = document.getElementById("remote-audio") || document.body.appendChild(
    Object.assign(document.createElement("audio"), { id: "remote-audio", autoplay: true }));
  const tracks = pc.getReceivers().map((r) => r.track).filter((t) => t && t.kind === "audio");
  if (tracks.length) {
    audio.srcObject = new MediaStream(tracks);
    audio.play().catch(() => {});
  }
}

export async function peerStats(pc) {
  const out = { connectionState: pc ? pc.connectionState : "none", inbound: null, outbound: null,
                transport: null, remoteCertificate: null, local: null, remote: null, codecs: {} };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") out.inbound = s;
    if (s.type === "outbound-rtp" && s.kind === "audio") out.outbound = s;
    if (s.type === "transport") out.transport = s;
    if (s.type === "codec") out.codecs[s.id] = s;
  });
  if (out.transport && out.transport.selectedCandidatePairId) {
    const pair = report.get(out.transport.selectedCandidatePairId);
    out.local = report.get(pair.localCandidateId);
    out.remote = report.get(pair.remoteCandidateId);
  }
  if (out.transport && out.transport.remoteCertificateId) {
    out.remoteCertificate = report.get(out.transport.remoteCertificateId);
  }
  return JSON.parse(JSON.stringify(out));
}

export async function refresh(status, pc) {
  const s = await peerStats(pc);
  status.ice = s.transport ? s.transport.iceState || "" : (pc ? pc.iceConnectionState : "");
  status.dtls = s.transport ? s.transport.dtlsState || "" : "";
  status.srtpCipher = s.transport ? s.transport.srtpCipher || "" : "";
  status.packetsSent = s.outbound ? s.outbound.packetsSent : 0;
  status.packetsReceived = s.inbound ? s.inbound.packetsReceived : 0;
  status.audioLevel = s.inbound ? s.inbound.audioLevel || 0 : 0;
  render(status);
  return s;
}

export function render(status) {
  if (typeof document === "undefined") return;
  const set = (id, value) => {
    const el = document.getElementById(id);
    if (el) el.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
  };
  set("st-registration", status.registration + (status.registerMs !== null ? ` (${status.registerMs} ms)` : ""));
  set("st-call", status.call + (status.setupMs !== null ? ` (${status.setupMs} ms)` : ""));
  set("st-ice", status.ice);
  set("st-dtls", status.dtls + (status.srtpCipher ? ` ${status.srtpCipher}` : ""));
  set("st-sent", status.packetsSent);
  set("st-received", status.packetsReceived);
  set("st-level", status.audioLevel ? status.audioLevel.toFixed(3) : 0);
  set("st-error", status.error);
  const log = document.getElementById("log");
  if (log) log.textContent = status.events.slice(-30).join("\n");
}

export function until(predicate, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const end = Date.now() + timeoutMs;
    const tick = () => {
      let value;
      try { value = predicate(); } catch (e) { reject(e); return; }
      if (value) resolve(value);
      else if (Date.now() > end) reject(new Error(`timeout: ${what}`));
      else setTimeout(tick, 25);
    };
    tick();
  });
}

// The page's form: fills in from config.json (served beside the page) and wires the buttons.
export function wirePage(phone) {
  if (typeof document === "undefined" || !document.getElementById("register")) return;
  const field = (id) => document.getElementById(id);
  fetch("config.json").then((r) => (r.ok ? r.json() : {})).then((cfg) => {
    if (cfg.server && !field("server").value) field("server").value = cfg.server;
    if (cfg.uri && !field("uri").value) field("uri").value = cfg.uri;
    if (cfg.target && !field("target").value) field("target").value = cfg.target;
  }).catch(() => {});
  const run = (fn) => async () => {
    try { await fn(); } catch (e) { phone.status.error = String(e.message || e); render(phone.status); }
  };
  field("register").onclick = run(() => phone.register({ server: field("server").value, uri: field("uri").value }));
  field("call").onclick = run(() => phone.call(field("target").value));
  field("hold").onclick = run(() => (phone.status.call === "held" ? phone.unhold() : phone.hold()));
  field("hangup").onclick = run(() => phone.hangup());
  setInterval(() => { if (phone.pc()) refresh(phone.status, phone.pc()); }, 500);
  render(phone.status);
}
