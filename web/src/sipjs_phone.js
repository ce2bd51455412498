// The web phone on SIP.js 0.21 (SimpleUser): SIP over WebSocket (RFC 7118) to the edge.
import { Web } from "sip.js";
import { newStatus, note, playRemote, refresh, remoteSdps, render, until, wirePage } from "./phone_core.js";

class SipJsPhone {
  constructor() {
    this.status = newStatus("sipjs");
    this.user = null;
    this.registered = false;
    this.t0 = 0;
  }

  pc() {
    const session = this.user && this.user.session;
    const sdh = session && session.sessionDescriptionHandler;
    return sdh ? sdh.peerConnection : null;
  }

  async register({ server, uri }) {
    if (this.user) await this.user.disconnect().catch(() => {});
    const t0 = performance.now();
    this.status.registration = "registering";
    render(this.status);
    const audio = document.getElementById("remote-audio") || document.body.appendChild(
      Object.assign(document.createElement("audio"), { id: "remote-audio", autoplay: true }));
    const delegate = {
      onCallReceived: () => {
        this.t0 = performance.now();
        this.status.direction = "incoming";
        this.status.call = "ringing";
        note(this.status, "incoming call");
        this.user.answer().catch((e) => { this.status.error = `answer: ${e}`; this.status.call = "failed"; });
      },
      onCallAnswered: () => {
        this.status.call = "established";
        this.status.setupMs = Math.round(performance.now() - this.t0);
        if (this.pc()) playRemote(this.pc());
        note(this.status, "call established");
      },
      onCallHangup: () => { this.status.call = "ended"; note(this.status, "ended"); },
      onServerDisconnect: () => note(this.status, "WebSocket disconnected"),
      onRegistered: () => { this.registered = true; },
      onUnregistered: () => { this.registered = false; this.status.registration = "unregistered"; render(this.status); },
    };
    this.user = new Web.SimpleUser(server, {
      aor: uri, delegate,
      media: { constraints: { audio: true, video: false }, remote: { audio } },
      userAgentOptions: { userAgentString: "e2ae web phone (SIP.js)", sessionDescriptionHandlerFactoryOptions: {
        peerConnectionConfiguration: { iceServers: [] }, iceGatheringTimeout: 2000 } },
      registererOptions: { expires: 300 },
    });
    await this.user.connect();
    let failed = null;
    await this.user.register({ requestDelegate: { onReject: (r) => { failed = r.message.statusCode; } } });
    await until(() => failed || this.registered, 10000, "REGISTER");
    if (failed) {
      this.status.registration = "failed";
      this.status.error = `REGISTER: ${failed}`;
      throw new Error(this.status.error);
    }
    this.status.registration = "registered";
    this.status.registerMs = Math.round(performance.now() - t0);
    note(this.status, "registered");
    return this.status.registerMs;
  }

  async call(target) {
    this.t0 = performance.now();
    this.status.direction = "outgoing";
    this.status.call = "calling";
    this.status.setupMs = null;
    note(this.status, `outgoing call ${target}`);
    try {
      await this.user.call(target, undefined, {
        requestDelegate: { onReject: (r) => { this.status.call = "failed"; this.status.error = `call: ${r.message.statusCode}`; } },
      });
    } catch (e) {
      this.status.call = "failed";
      this.status.error = `call: ${e}`;
    }
    await until(() => ["established", "failed", "ended"].includes(this.status.call), 20000, "call");
    if (this.status.call !== "established") throw new Error(this.status.error || this.status.call);
    return this.status.setupMs;
  }

  async waitEstablished(timeoutMs) {
    await until(() => this.status.call === "established", timeoutMs, "incoming call");
    return this.status.setupMs;
  }

  // Each resolves once the re-INVITE's answer was applied (a new remote SDP): SimpleUser's
  // own promise settles when the re-INVITE is sent.
  async hold() {
    const before = remoteSdps.length;
    await this.user.hold();
    await until(() => remoteSdps.length > before, 10000, "hold");
    this.status.call = "held";
    this.status.holds += 1;
    note(this.status, "held");
  }

  async unhold() {
    const before = remoteSdps.length;
    await this.user.unhold();
    await until(() => remoteSdps.length > before, 10000, "unhold");
    this.status.call = "established";
    note(this.status, "resumed");
  }

  async hangup() {
    await this.user.hangup();
    await until(() => ["ended", "failed"].includes(this.status.call), 10000, "hangup");
  }

  async stats() { return refresh(this.status, this.pc()); }

  remoteSdps() { return remoteSdps.slice(); }

  stop() { if (this.user) this.user.disconnect(); }
}

window.phone = new SipJsPhone();
wirePage(window.phone);
