// The web phone on JsSIP 3.13: SIP over WebSocket (RFC 7118) to the edge.
import JsSIP from "jssip";
import { newStatus, note, playRemote, refresh, remoteSdps, render, until, wirePage } from "./phone_core.js";

const MEDIA = { audio: true, video: false };
const PC_CONFIG = { iceServers: [] };

class JsSipPhone {
  constructor() {
    this.status = newStatus("jssip");
    this.ua = null;
    this.session = null;
  }

  pc() { return this.session ? this.session.connection : null; }

  async register({ server, uri, password }) {
    if (this.ua) this.ua.stop();
    const t0 = performance.now();
    this.status.registration = "registering";
    render(this.status);
    const socket = new JsSIP.WebSocketInterface(server);
    this.ua = new JsSIP.UA({
      sockets: [socket], uri, password: password || "", register: true, register_expires: 300,
      session_timers: false, user_agent: "e2ae web phone (JsSIP)",
    });
    const done = new Promise((resolve, reject) => {
      this.ua.on("registered", () => {
        this.status.registration = "registered";
        this.status.registerMs = Math.round(performance.now() - t0);
        note(this.status, "registered");
        resolve(this.status.registerMs);
      });
      this.ua.on("registrationFailed", (e) => {
        this.status.registration = "failed";
        this.status.error = `REGISTER: ${e.cause}`;
        note(this.status, `registration failed: ${e.cause}`);
        reject(new Error(this.status.error));
      });
    });
    this.ua.on("unregistered", () => { this.status.registration = "unregistered"; render(this.status); });
    this.ua.on("disconnected", () => note(this.status, "WebSocket disconnected"));
    this.ua.on("newRTCSession", (e) => this._session(e.session, e.originator === "remote"));
    this.ua.start();
    return done;
  }

  _session(session, incoming) {
    this.session = session;
    const t0 = performance.now();
    this.status.direction = incoming ? "incoming" : "outgoing";
    this.status.call = incoming ? "ringing" : "calling";
    this.status.setupMs = null;
    note(this.status, `${this.status.direction} call ${session.remote_identity.uri}`);
    session.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", () => playRemote(e.peerconnection));
    });
    session.on("confirmed", () => {
      this.status.call = "established";
      this.status.setupMs = Math.round(performance.now() - t0);
      playRemote(session.connection);
      note(this.status, "call established");
    });
    session.on("hold", () => { this.status.call = "held"; this.status.holds += 1; note(this.status, "held"); });
    session.on("unhold", () => { this.status.call = "established"; note(this.status, "resumed"); });
    session.on("ended", (e) => { this.status.call = "ended"; note(this.status, `ended by ${e.originator}: ${e.cause}`); });
    session.on("failed", (e) => {
      this.status.call = "failed";
      const code = e.message && e.message.status_code ? ` (${e.message.status_code} ${e.message.reason_phrase})` : "";
      this.status.error = `call: ${e.cause}${code}`;
      note(this.status, `call failed: ${e.cause}`);
    });
    if (incoming) {
      if (this.session && this.session.connection) playRemote(this.session.connection);
      session.answer({ mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
    }
  }

  async call(target) {
    this.ua.call(target, { mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
    await until(() => ["established", "failed", "ended"].includes(this.status.call), 20000, "call");
    if (this.status.call !== "established") throw new Error(this.status.error || this.status.call);
    return this.status.setupMs;
  }

  async waitEstablished(timeoutMs) {
    await until(() => this.status.call === "established", timeoutMs, "incoming call");
    return this.status.setupMs;
  }

  // Each resolves once the re-INVITE's 200 came back (JsSIP's "done" callback).
  async hold() {
    let done = false;
    if (!this.session.hold({}, () => { done = true; })) throw new Error("hold refused by JsSIP");
    await until(() => done && this.status.call === "held", 10000, "hold");
  }

  async unhold() {
    let done = false;
    if (!this.session.unhold({}, () => { done = true; })) throw new Error("unhold refused by JsSIP");
    await until(() => done && this.status.call === "established", 10000, "unhold");
  }

  async hangup() {
    if (this.session && !this.session.isEnded()) this.session.terminate();
    await until(() => ["ended", "failed"].includes(this.status.call), 10000, "hangup");
  }

  async stats() { return refresh(this.status, this.pc()); }

  remoteSdps() { return remoteSdps.slice(); }

  stop() { if (this.ua) this.ua.stop(); }
}

window.phone = new JsSipPhone();
wirePage(window.phone);
