// voice-mcp page: join the room with a one-time code, talk, read the transcript, type as a fallback.
// livekit-client comes from the pinned npm package (served at /vendor/livekit-client.umd.js as LivekitClient).
"use strict";

(() => {
  const LK = window.LivekitClient;
  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $("state"), join: $("join"), code: $("code"), joinError: $("join-error"), talk: $("talk"),
    transcript: $("transcript"), done: $("done"), mute: $("mute"), audio: $("audio"), chat: $("chat"),
    message: $("message"), players: $("players"),
  };
  const ROLE = "voice-mcp.role";
  const AGENT_PREFIX = "voice-mcp-agent-";
  const TRACK_HEARD = "voice-mcp.track-heard";
  const LABELS = {
    idle: "Not connected", connecting: "Connecting…", listening: "Listening", speaking: "Assistant speaking",
    thinking: "Assistant thinking", waiting: "Waiting for the assistant", reconnecting: "Reconnecting…",
    error: "Disconnected",
  };

  let room = null;
  let leaving = false;
  let retryDelay = 500;
  const segments = new Map(); // segment id -> <li>

  function setState(state, detail) {
    ui.state.dataset.state = state;
    ui.state.textContent = detail ? `${LABELS[state]}: ${detail}` : LABELS[state];
  }

  function isAgent(p) {
    return p && (p.kind === LK.ParticipantKind.AGENT || p.identity.startsWith(AGENT_PREFIX) ||
      p.attributes?.[ROLE] === "worker");
  }
  function agent() {
    return room ? [...room.remoteParticipants.values()].find(isAgent) : undefined;
  }
  function isBridge(identity) {
    const p = room?.remoteParticipants.get(identity);
    return p?.attributes?.[ROLE] === "bridge";
  }

  function showAgentState() {
    if (!room || room.state !== LK.ConnectionState.Connected) return;
    const a = agent();
    if (!a) return setState("waiting");
    const s = a.attributes["lk.agent.state"];
    setState(s === "speaking" ? "speaking" : s === "thinking" ? "thinking" : "listening");
  }

  // --- transcript --------------------------------------------------------------------------------------------
  function line(id, who, cls) {
    let li = id && segments.get(id);
    if (!li) {
      li = document.createElement("li");
      li.className = cls;
      const label = document.createElement("span");
      label.className = "who";
      label.textContent = who;
      li.append(label, document.createElement("span"));
      ui.transcript.append(li);
      if (id) {
        segments.set(id, li);
        if (segments.size > 500) segments.delete(segments.keys().next().value);
      }
    }
    return li;
  }
  function write(li, text, final) {
    li.lastChild.textContent = text;
    li.classList.toggle("partial", !final);
    li.scrollIntoView({ block: "end" });
  }

  // Who spoke a transcript: the track it transcribes says so (`lk.transcribed_track_id`, what LiveKit frontends
  // use: the worker sends user transcripts too, and servers may name the worker as their sender).
  function speakerOf(sender, attrs) {
    const trackId = attrs["lk.transcribed_track_id"];
    if (trackId) {
      for (const pub of room.localParticipant.trackPublications.values()) {
        if (pub.trackSid === trackId) return "me";
      }
      for (const p of room.remoteParticipants.values()) {
        for (const pub of p.trackPublications.values()) {
          if (pub.trackSid === trackId) return isAgent(p) ? "agent" : isBridge(p.identity) ? "bridge" : "other";
        }
      }
    }
    if (sender === room.localParticipant.identity) return "me";
    if (isBridge(sender)) return "bridge";
    const p = room.remoteParticipants.get(sender);
    return isAgent(p) || sender.startsWith(AGENT_PREFIX) ? "agent" : "other";
  }

  async function onTranscription(reader, participantInfo) {
    const attrs = reader.info.attributes || {};
    const speaker = speakerOf(participantInfo.identity, attrs);
    if (speaker === "bridge") return; // the bridge is plumbing, not a person in the conversation
    const who = { agent: "Assistant", me: "You", other: "You (other device)" }[speaker];
    const li = line(attrs["lk.segment_id"] || reader.info.id, who, speaker === "agent" ? "assistant" : "user");
    // Agent speech arrives as one stream of deltas per segment; user transcripts as one stream per update, each
    // with the whole text so far. Either way, this stream's text so far is the segment's text.
    let text = "";
    for await (const chunk of reader) {
      text += chunk;
      write(li, text, false);
    }
    write(li, text, true);
  }

  // --- history: the recent conversation, sent by the worker when this device joins -----------------------------
  // A snapshot (JSON list of {role, text, identity, at}, oldest first; docs/livekit-protocol.md): it replaces every
  // finished line shown, so a line that is in it and also came live shows once. A line still being spoken stays,
  // after it. It may arrive more than once (a reconnect, the server reporting this device active).
  async function onHistory(reader) {
    const turns = JSON.parse(await reader.readAll());
    if (!Array.isArray(turns)) throw new Error("the history is not a list");
    for (const li of [...ui.transcript.children]) {
      if (li.classList.contains("partial")) continue;
      li.remove();
    }
    for (const [id, li] of segments) if (!li.isConnected) segments.delete(id);
    const speaking = [...ui.transcript.children];
    const me = room.localParticipant.identity;
    for (const turn of turns) {
      const assistant = turn.role === "assistant";
      const who = assistant ? "Assistant" : turn.identity === me ? "You" : "You (other device)";
      const li = line(null, who, `${assistant ? "assistant" : "user"} history`);
      if (typeof turn.at === "number") li.dataset.at = new Date(turn.at * 1000).toISOString();
      write(li, String(turn.text ?? ""), true);
    }
    ui.transcript.append(...speaking); // in-progress lines after the past
  }

  // --- tokens ------------------------------------------------------------------------------------------------
  async function fetchToken(code) {
    const headers = { "Content-Type": "application/json" };
    if (code) headers.Authorization = `Bearer ${code}`;
    const response = await fetch("/api/token", {
      method: "POST", headers, credentials: "same-origin", cache: "no-store",
      body: JSON.stringify({ participant_name: "voice-mcp page" }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.status !== 201) {
      const error = new Error(body.message || `token service answered ${response.status}`);
      error.status = response.status;
      error.code = body.error;
      throw error;
    }
    return body;
  }

  // --- the room ----------------------------------------------------------------------------------------------
  // Tell the worker when the first audio of one of its tracks reaches this page (`voice-mcp.track-heard`, once per
  // track, docs/livekit-protocol.md): it takes its track away while quiet and, having brought it back, speaks once
  // this page hears it, so no first word is lost to a subscription still being set up. A remote track is `muted`
  // until its first packets arrive.
  function ackWhenHeard(r, heard, track, publication, participant) {
    const sid = publication.trackSid;
    if (!participant.identity.startsWith(AGENT_PREFIX) || heard.has(sid)) return;
    const send = () => {
      if (heard.has(sid)) return;
      heard.add(sid);
      if (heard.size > 100) heard.delete(heard.values().next().value);
      r.localParticipant.publishData(new TextEncoder().encode(JSON.stringify({ track_sid: sid })), {
        reliable: true, topic: TRACK_HEARD, destinationIdentities: [participant.identity],
      }).catch((e) => console.warn("track-heard failed", e));
    };
    const media = track.mediaStreamTrack;
    if (!media.muted) send();
    else media.addEventListener("unmute", send, { once: true });
  }

  function newRoom() {
    const r = new LK.Room({
      adaptiveStream: false, dynacast: false,
      audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const heard = new Set(); // the worker's track sids this page told it it hears
    r.on(LK.RoomEvent.TrackSubscribed, (track, publication, participant) => {
      if (track.kind !== LK.Track.Kind.Audio) return;
      ui.players.append(track.attach());
      ackWhenHeard(r, heard, track, publication, participant);
    });
    r.on(LK.RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()));
    r.on(LK.RoomEvent.AudioPlaybackStatusChanged, () => { ui.audio.hidden = r.canPlaybackAudio; });
    r.on(LK.RoomEvent.ParticipantAttributesChanged, showAgentState);
    r.on(LK.RoomEvent.ParticipantConnected, showAgentState);
    r.on(LK.RoomEvent.ParticipantDisconnected, showAgentState);
    r.on(LK.RoomEvent.Reconnecting, () => setState("reconnecting"));
    r.on(LK.RoomEvent.Reconnected, showAgentState);
    r.on(LK.RoomEvent.Disconnected, () => { if (!leaving) scheduleReconnect(); });
    r.registerTextStreamHandler("lk.transcription", (reader, info) => {
      onTranscription(reader, info).catch((e) => console.warn("transcription stream failed", e));
    });
    r.registerTextStreamHandler("voice-mcp.history", (reader) => {
      onHistory(reader).catch((e) => console.warn("history stream failed", e));
    });
    return r;
  }

  async function connect(code) {
    setState("connecting");
    const { server_url: url, participant_token: token } = await fetchToken(code);
    const previous = room; // a failed attempt's room: drop it quietly, one room at a time
    if (previous) {
      previous.removeAllListeners();
      await previous.disconnect();
    }
    room = newRoom();
    await room.connect(url, token);
    retryDelay = 500;
    ui.join.hidden = true;
    ui.talk.hidden = false;
    ui.audio.hidden = room.canPlaybackAudio;
    await room.localParticipant.setMicrophoneEnabled(true);
    showAgentState();
  }

  function scheduleReconnect() {
    setState("reconnecting");
    const delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, 15000);
    setTimeout(async () => {
      try {
        await connect(null); // the device session cookie, never the (used) code
      } catch (e) {
        if (e.status === 401) return askForCode(e.message);
        scheduleReconnect();
      }
    }, delay);
  }

  function askForCode(message) {
    setState(message ? "error" : "idle");
    ui.talk.hidden = true;
    ui.join.hidden = false;
    ui.joinError.textContent = message || "";
    ui.code.focus();
  }

  async function start(code) {
    try {
      await connect(code);
    } catch (e) {
      if (room) await room.disconnect();
      room = null;
      askForCode(e.code === "code_missing" ? "" : e.message); // no code and no session yet: just ask
    }
  }

  // --- controls ----------------------------------------------------------------------------------------------
  ui.join.addEventListener("submit", (event) => {
    event.preventDefault();
    ui.joinError.textContent = "";
    start(ui.code.value.trim());
  });

  ui.done.addEventListener("click", async () => {
    const a = agent();
    if (!a) return;
    try {
      await room.localParticipant.performRpc({ destinationIdentity: a.identity, method: "end_turn", payload: "" });
    } catch (e) {
      console.warn("end_turn failed", e);
    }
  });

  ui.mute.addEventListener("click", async () => {
    const muted = ui.mute.getAttribute("aria-pressed") !== "true";
    await room?.localParticipant.setMicrophoneEnabled(!muted);
    ui.mute.setAttribute("aria-pressed", String(muted));
    ui.mute.textContent = muted ? "Unmute microphone" : "Mute microphone";
  });

  ui.audio.addEventListener("click", () => room?.startAudio());

  ui.chat.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = ui.message.value.trim();
    if (!text || !room) return;
    ui.message.value = "";
    await room.localParticipant.sendText(text, { topic: "lk.chat" });
    write(line(null, "You (typed)", "user"), text, true);
  });

  window.addEventListener("pagehide", () => { leaving = true; room?.disconnect(); });

  // The code comes in the fragment (#code=…, never sent to a server) or the query; it leaves the address bar at once.
  const params = new URLSearchParams(location.hash.slice(1));
  const code = params.get("code") || new URLSearchParams(location.search).get("code");
  if (location.hash || location.search) history.replaceState(null, "", location.pathname);
  start(code); // without a code: the device session cookie, if this device has one
})();
