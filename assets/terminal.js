/*
 * terminal.js: the browser end of one alfresco-ssh session (docs/PROTOCOL.md).
 * It owns the xterm.js terminal, the WebSocket to /ws and the status bar. It reads
 * the session id (or, at /view/<id>, a share link's id) from the path. A session
 * id can be claimed only once; after that the page holds the session's resume
 * token (in memory and sessionStorage, so a reload of this tab works) and, when
 * the socket drops, reconnects with back-off and resumes from the last byte it
 * received. A view page watches read-only and reconnects the same way. A session the
 * job created with "handback" gets two buttons that end it with the job's verdict, and
 * the last 5 minutes before a session's time limit count down in the bar. When the server
 * asks for a password or a one-time code (auth-prompt), a small form over the terminal
 * takes the answers; its inputs are removed as soon as they are sent.
 * No inline styles and no eval: the page runs under `default-src 'self'`.
 */
(function () {
  'use strict';

  const FONT_SIZE_DEFAULT = 15;
  const FONT_SIZE_MIN = 8;
  const FONT_SIZE_MAX = 32;
  const FONT_SIZE_KEY = 'alfresco-ssh.fontSize';
  // Window resizes come in bursts while dragging; fit once the burst settles.
  const RESIZE_DEBOUNCE_MS = 100;
  // Flow control (docs/PROTOCOL.md, `pause` and `resume`), counted in bytes handed to
  // term.write whose callback has not run yet, i.e. not yet parsed. xterm.js parses in
  // 12 ms slices and, past 50 MB, throws output away; a flood must stop well before.
  // 512 KiB is eight of the server's 64 KiB frames: enough queued that the parser never
  // idles on a fast stream, and small next to what is still in flight when `pause` goes
  // out (socket buffers: a few MB on loopback), so the backlog, and the wait for Ctrl-C
  // to show, stay about as small as the network allows. Resuming at 128 KiB leaves two
  // frames to parse while `resume` reaches the server and output flows again; the gap
  // between the marks keeps the page from sending pause/resume per frame.
  const FLOW_HIGH_WATERMARK = 512 * 1024;
  const FLOW_LOW_WATERMARK = 128 * 1024;
  // Reconnecting after a dropped socket: the first try at once-ish, then doubling, up to
  // a try every 5 s, and no more tries after 6 minutes (the server's grace period is 5
  // minutes by default; after it the token is refused anyway).
  const RECONNECT_FIRST_MS = 250;
  const RECONNECT_MAX_MS = 5000;
  const RECONNECT_GIVE_UP_MS = 6 * 60 * 1000;
  // The countdown shows in the last 5 minutes before the session's time limit: early
  // enough to ask the job for more time, late enough not to distract the whole session.
  const TIMER_SHOWN_BELOW_S = 5 * 60;
  // setTimeout takes at most 2^31-1 ms (24.8 days); a later wake-up is just a re-check.
  const TIMER_LONGEST_WAIT_MS = 0x7fffffff;
  // An armed handback falls back to the two buttons after 10 s, so a confirm cannot come
  // from a stray key or click long after the first one.
  const HANDBACK_CONFIRM_MS = 10 * 1000;

  // Readable on a dark background; the ANSI colours follow the Tango palette.
  const THEME = {
    background: '#1e1e1e',
    foreground: '#d4d4d4',
    cursor: '#f0f0f0',
    cursorAccent: '#1e1e1e',
    selectionBackground: '#264f78',
    black: '#2e3436',
    red: '#cc4b4b',
    green: '#6ab04c',
    yellow: '#d7ba3a',
    blue: '#4f8fd6',
    magenta: '#a36ac7',
    cyan: '#3fb0b0',
    white: '#d3d7cf',
    brightBlack: '#767676',
    brightRed: '#ef6b6b',
    brightGreen: '#8ae234',
    brightYellow: '#fce94f',
    brightBlue: '#82b4f0',
    brightMagenta: '#c592e0',
    brightCyan: '#5fd7d7',
    brightWhite: '#eeeeec',
  };

  const statusEl = document.getElementById('status');
  const shareEl = document.getElementById('share');
  const noticeEl = document.getElementById('notice');
  const containerEl = document.getElementById('terminal');
  const timerEl = document.getElementById('timer');
  const handbackEl = document.getElementById('handback');
  const handbackChooseEl = document.getElementById('handback-choose');
  const handbackConfirmEl = document.getElementById('handback-confirm');
  const handbackYesEl = document.getElementById('handback-yes');
  const handbackCancelEl = document.getElementById('handback-cancel');
  const authFormEl = document.getElementById('auth-prompt');
  const authTargetEl = document.getElementById('auth-prompt-target');
  const authNameEl = document.getElementById('auth-prompt-name');
  const authInstructionEl = document.getElementById('auth-prompt-instruction');
  const authFieldsEl = document.getElementById('auth-prompt-fields');
  const path = location.pathname.replace(/^\/+|\/+$/g, '');
  // At /view/<id> the page watches a session through a share link: read-only.
  const viewing = path.indexOf('view/') === 0;
  const sessionId = viewing ? path.slice('view/'.length) : path;
  const TOKEN_KEY = 'alfresco-ssh.resume.' + sessionId;
  // Beside the token: what connection-ready said about handback and the time limit, which
  // session-resumed does not repeat, for the page a reload brings.
  const SESSION_KEY = 'alfresco-ssh.session.' + sessionId;
  // Output bytes received since the session began: the offset a resume starts from.
  let received = 0;
  let resumeToken = loadToken();
  // The shell is ready (this page saw connection-ready, or a resume said so); before it, a
  // resume token can already exist, given with the first auth-prompt.
  let loggedIn = false;
  const reconnect = { timer: null, delay: RECONNECT_FIRST_MS, since: 0 };

  // One of: connecting, connected, reconnecting, draining, viewing, ended, error,
  // disconnected. The last three are final.
  let state = 'connecting';

  function setState(next, text) {
    state = next;
    statusEl.className = 'status status-' + next;
    statusEl.textContent = text;
    // Sharing needs a live session and its resume token.
    shareEl.hidden = viewing || !resumeToken || !loggedIn || isFinal();
    updateHandback();
    if (isFinal()) {
      setSessionEnd(null);
    }
  }

  function isFinal() {
    return state === 'ended' || state === 'error' || state === 'disconnected';
  }

  // localStorage throws in some private modes and when storage is disabled.
  function loadFontSize() {
    try {
      const n = Number(window.localStorage.getItem(FONT_SIZE_KEY));
      if (Number.isInteger(n) && n >= FONT_SIZE_MIN && n <= FONT_SIZE_MAX) {
        return n;
      }
    } catch (e) {
      // fall through to the default
    }
    return FONT_SIZE_DEFAULT;
  }

  function saveFontSize(n) {
    try {
      window.localStorage.setItem(FONT_SIZE_KEY, String(n));
    } catch (e) {
      // not remembered; the size still applies to this page
    }
  }

  const term = new Terminal({
    fontSize: loadFontSize(),
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace',
    cursorBlink: true,
    scrollback: 5000,
    theme: THEME,
    // term.unicode (used by the Unicode 11 addon) is a "proposed" API in xterm 5.
    allowProposedApi: true,
  });

  // The default DOM renderer writes <style> elements and style attributes, which
  // `default-src 'self'` forbids; the canvas renderer needs neither. Loaded before
  // open() so the DOM renderer is never created. Without it, xterm falls back.
  if (window.CanvasAddon) {
    try {
      term.loadAddon(new CanvasAddon.CanvasAddon());
    } catch (e) {
      console.warn('canvas renderer unavailable, using the DOM renderer', e);
    }
  }

  const fitAddon = new FitAddon.FitAddon();
  term.loadAddon(fitAddon);
  term.loadAddon(new WebLinksAddon.WebLinksAddon());
  term.loadAddon(new Unicode11Addon.Unicode11Addon());
  term.unicode.activeVersion = '11';

  term.open(containerEl);
  if (viewing) {
    term.options.disableStdin = true;
  }
  fit();

  // fit() measures the container; it throws if the terminal is not laid out yet.
  function fit() {
    try {
      fitAddon.fit();
    } catch (e) {
      console.warn('fit failed', e);
    }
  }

  // --- the WebSocket (docs/PROTOCOL.md, "WebSocket") ---

  let socket = null;

  // sessionStorage throws in some private modes; the token then lives in memory only.
  function loadToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null;
    }
  }

  function saveToken(token) {
    resumeToken = token;
    try {
      if (token) {
        window.sessionStorage.setItem(TOKEN_KEY, token);
      } else {
        window.sessionStorage.removeItem(TOKEN_KEY);
        window.sessionStorage.removeItem(SESSION_KEY);
      }
    } catch (e) {
      // kept in memory only
    }
  }

  function isOpen() {
    return socket !== null && socket.readyState === WebSocket.OPEN;
  }

  // An event without data goes out as ["name"], as docs/PROTOCOL.md writes it.
  function sendEvent(name, data) {
    if (isOpen()) {
      socket.send(JSON.stringify(data === undefined ? [name] : [name, data]));
    }
  }

  // --- output and flow control ---

  const flow = { pending: 0, paused: false, pauses: 0, resumes: 0, maxPending: 0 };

  // Each chunk counts from term.write until xterm.js has parsed it. `paused` makes the
  // events alternate: one pause, then one resume, never two of a kind in a row.
  function writeOutput(bytes) {
    flow.pending += bytes.length;
    flow.maxPending = Math.max(flow.maxPending, flow.pending);
    term.write(bytes, function () {
      flow.pending -= bytes.length;
      if (flow.paused && flow.pending < FLOW_LOW_WATERMARK) {
        flow.paused = false;
        flow.resumes++;
        sendEvent('resume');
      }
    });
    if (!flow.paused && flow.pending > FLOW_HIGH_WATERMARK) {
      flow.paused = true;
      flow.pauses++;
      sendEvent('pause');
    }
  }

  // --- what to do next, once the session is over ---

  // Each status a session's end shows says what happened, then what the person can do
  // next. A link opens one session, once, so "open it again" is offered only where the
  // gateway refused before claiming the link (docs/PROTOCOL.md, "The page at the end").
  const USED_UP = 'this link is used up; you can close the tab';
  const NEW_LINK = 'this link is used up; to go on, ask whoever gave it to you for a new one';
  const RETRY = 'reload the page in a minute to try again; if the link no longer opens, ask for a new one';
  const NEXT_STEP = {
    // Refused before the claim: the link still works once there is room.
    too_many_sessions: 'the link still works: reload the page in a minute to try again',
    too_many_viewers: 'the link still works: reload the page later to try again',
    viewer_too_slow: 'reload the page to watch again',
    // A start during the drain kept its link, but the gateway that holds it is going away.
    server_shutdown: RETRY,
    start_timeout: RETRY,
    session_taken_over: 'the session is open in another tab or window: go on there, and close this one',
    unknown_session: 'ask whoever gave you this link for a new one',
    resume_invalid: 'ask whoever gave you this link for a new one',
    unknown_view: 'ask whoever shared it for a new link',
    share_revoked: 'ask whoever shared it for a new link',
  };

  function nextStep(code) {
    return Object.prototype.hasOwnProperty.call(NEXT_STEP, code) ? NEXT_STEP[code] : NEW_LINK;
  }

  function endedText(data) {
    const reason = data && data.reason;
    if (reason === 'revoked') {
      return 'session ended through the API (by the job or an operator) — ' + NEW_LINK;
    }
    if (reason === 'handback') {
      // A viewer did not press the button: the same ending, told as what happened.
      const who = viewing ? 'the session was handed back' : 'you handed the session back';
      if (data.handback === 'continue') {
        return who + '; the job continues — you can close the tab';
      }
      if (data.handback === 'fail') {
        return who + '; the job will fail — you can close the tab';
      }
      return who + ' — you can close the tab';
    }
    if (data && data.exit_status !== null && data.exit_status !== undefined) {
      return 'the shell exited with status ' + data.exit_status + ' — ' + USED_UP;
    }
    if (data && data.exit_signal) {
      return 'the shell was ended by signal ' + data.exit_signal + ' — ' + USED_UP;
    }
    if (reason === 'abandoned') {
      return 'the session ended: its owner left and did not come back — you can close the tab';
    }
    return 'session ended — ' + USED_UP;
  }

  function errorText(data) {
    const message = (data && data.message) || 'unknown error';
    const code = (data && data.code) || 'unknown';
    return 'error: ' + message + ' (' + code + ') — ' + nextStep(code);
  }

  // textContent, never HTML: the target is the session's own user@host:port.
  function targetText(data) {
    return data && typeof data.target === 'string' ? data.target : '';
  }

  function onServerEvent(name, data) {
    switch (name) {
      case 'auth-prompt':
        // The first prompt brings the resume token: a lost socket can come back to it.
        if (!viewing && data && typeof data.resume_token === 'string') {
          saveToken(data.resume_token);
        }
        showAuthPrompt(data);
        break;
      case 'connection-ready':
        hideAuthPrompt();
        reconnect.delay = RECONNECT_FIRST_MS;
        if (viewing) {
          // A view starts from the session's screen as the server holds it.
          term.reset();
          received = 0;
          followSize(data);
          setSessionEnd(data && data.ends_in);
          setState('viewing', 'viewing ' + targetText(data) + ' (read-only)');
          break;
        }
        if (data && typeof data.resume_token === 'string') {
          saveToken(data.resume_token);
        }
        loggedIn = true;
        resetHandback(Boolean(data && data.handback === true));
        setSessionEnd(data && data.ends_in);
        setState('connected', 'connected to ' + targetText(data));
        term.focus();
        break;
      case 'session-resumed':
        reconnect.delay = RECONNECT_FIRST_MS;
        if (data && data.truncated) {
          // The server no longer holds everything missed: start over from what it has.
          term.reset();
        }
        received = data && typeof data.offset === 'number' ? data.offset : 0;
        saveToken(data && data.resume_token);
        if (flow.paused) {
          sendEvent('pause');
        }
        // A handback sent on the socket that dropped may never have arrived: the buttons
        // work again. What the server says here (if it says it) replaces what the page had.
        resetHandback(data && typeof data.handback === 'boolean' ? data.handback : handback.enabled);
        if (data && 'ends_in' in data) {
          setSessionEnd(data.ends_in);
        }
        if (data && data.authenticating === true) {
          // Back while the server still logs in: its open prompt, if any, comes next.
          setState('connecting', 'logging in…');
          break;
        }
        loggedIn = true;
        setState('connected', 'connected to ' + targetText(data));
        term.focus();
        break;
      case 'terminal-size':
        followSize(data);
        break;
      case 'session-timer':
        // The job extended the session: the new time to its limit replaces the old one.
        setSessionEnd(data && data.ends_in);
        break;
      case 'ssh-closed':
        hideAuthPrompt();
        saveToken(null);
        setState('ended', endedText(data));
        break;
      case 'ssh-error':
        hideAuthPrompt();
        saveToken(null);
        setState('error', errorText(data));
        break;
      case 'warning':
        // The only warning a person needs to see: the gateway is restarting, and this
        // session will be ended at the end of its drain. The rest are for developers.
        if (data && data.code === 'server_draining' && state === 'connected') {
          setState('draining', 'connected; the gateway is shutting down: finish your work, this session will end soon');
        } else {
          console.warn('alfresco-ssh warning', data);
        }
        break;
      default:
        // Unknown events are ignored so the server can add new ones.
        break;
    }
  }

  // The server's questions. Its texts are set as textContent, never as HTML; an answer
  // whose prompt has echo off is masked. Viewers are never sent prompts.
  function showAuthPrompt(data) {
    if (viewing || !data || !Array.isArray(data.prompts)) {
      return;
    }
    const text = function (value) { return typeof value === 'string' ? value : ''; };
    // Who asks: through jump hosts each host may, and the person must know whose password.
    const who = text(data.target);
    const hop = Number.isInteger(data.hop) ? 'jump host ' + data.hop + ' ' : '';
    authTargetEl.textContent = who === '' ? '' : 'Log in to ' + hop + who;
    authTargetEl.hidden = authTargetEl.textContent === '';
    authNameEl.textContent = text(data.name);
    authNameEl.hidden = authNameEl.textContent === '';
    authInstructionEl.textContent = text(data.instruction);
    authInstructionEl.hidden = authInstructionEl.textContent === '';
    authFieldsEl.replaceChildren();
    data.prompts.forEach(function (prompt) {
      const label = document.createElement('label');
      label.className = 'auth-prompt-label';
      label.textContent = text(prompt && prompt.text);
      const input = document.createElement('input');
      input.className = 'auth-prompt-input';
      input.type = prompt && prompt.echo === true ? 'text' : 'password';
      input.autocomplete = 'off';
      input.spellcheck = false;
      input.setAttribute('autocapitalize', 'off');
      label.appendChild(input);
      authFieldsEl.appendChild(label);
    });
    authFormEl.hidden = false;
    setState('connecting', 'the server asks you to log in');
    const first = authFieldsEl.querySelector('input');
    (first || document.getElementById('auth-prompt-submit')).focus();
  }

  // Removes the inputs, and with them the answers typed into them, from the page.
  function hideAuthPrompt() {
    authFieldsEl.querySelectorAll('input').forEach(function (input) { input.value = ''; });
    authFieldsEl.replaceChildren();
    authFormEl.hidden = true;
  }

  authFormEl.addEventListener('submit', function (ev) {
    ev.preventDefault();
    const inputs = authFieldsEl.querySelectorAll('input');
    const answers = Array.prototype.map.call(inputs, function (input) { return input.value; });
    hideAuthPrompt();
    sendEvent('auth-response', { answers: answers });
    setState('connecting', 'logging in…');
    term.focus();
  });

  // A viewer's terminal takes the session's size rather than its window's.
  function followSize(data) {
    if (viewing && data && data.cols > 0 && data.rows > 0) {
      term.resize(data.cols, data.rows);
    }
  }

  function onMessage(ev) {
    if (typeof ev.data !== 'string') {
      const bytes = new Uint8Array(ev.data);
      received += bytes.length;
      writeOutput(bytes);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      console.warn('ignoring a text frame that is not JSON');
      return;
    }
    if (Array.isArray(msg) && typeof msg[0] === 'string') {
      onServerEvent(msg[0], msg[1]);
    }
  }

  function connect() {
    if (sessionId === '') {
      setState('error', 'error: the address has no session id');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    try {
      socket = new WebSocket(scheme + '//' + location.host + '/ws');
    } catch (e) {
      setState('disconnected', 'disconnected');
      return;
    }
    socket.binaryType = 'arraybuffer';
    // Only the newest socket speaks for the session: one replaced by a reconnect (the
    // `online` event can start one while another is still opening) is ignored, so its
    // `session_taken_over` or close cannot end the page.
    const current = socket;
    socket.addEventListener('open', function () {
      if (current !== socket) {
        return;
      }
      if (viewing) {
        sendEvent('view-session', { id: sessionId });
      } else if (resumeToken) {
        sendEvent('resume-session', { token: resumeToken, offset: received, cols: term.cols, rows: term.rows });
      } else {
        sendEvent('start-session', { id: sessionId, cols: term.cols, rows: term.rows });
      }
    });
    socket.addEventListener('message', function (ev) {
      if (current === socket) {
        onMessage(ev);
      }
    });
    // A close after ssh-closed or ssh-error keeps that status; any other close is a
    // lost connection, which a resumable session (or a view) tries to get back.
    // 'error' is always followed by 'close', so it is not handled.
    socket.addEventListener('close', function () {
      if (current !== socket || isFinal()) {
        return;
      }
      if (resumeToken || (viewing && state !== 'connecting')) {
        // An open prompt goes with its socket (the server asks the next one again), and
        // the answers typed into it with the form.
        hideAuthPrompt();
        scheduleReconnect();
      } else {
        hideAuthPrompt();
        setState('disconnected', 'disconnected');
      }
    });
  }

  function scheduleReconnect() {
    const now = Date.now();
    if (state !== 'reconnecting') {
      reconnect.since = now;
    }
    if (now - reconnect.since > RECONNECT_GIVE_UP_MS) {
      setState('disconnected', 'disconnected');
      return;
    }
    setState('reconnecting', 'connection lost; reconnecting…');
    clearTimeout(reconnect.timer);
    reconnect.timer = setTimeout(connect, reconnect.delay);
    reconnect.delay = Math.min(RECONNECT_MAX_MS, reconnect.delay * 2);
  }

  // Back online: try now rather than at the end of the current back-off.
  window.addEventListener('online', function () {
    if (state === 'reconnecting') {
      clearTimeout(reconnect.timer);
      const stale = socket;
      connect();
      if (stale) {
        stale.close();
      }
    }
  });

  // --- share links ---

  // Shows `text` under the bar (textContent, never HTML); fit() gives the terminal the
  // rest of the height.
  function showNotice(text) {
    noticeEl.textContent = text;
    noticeEl.hidden = !text;
    fit();
  }

  shareEl.addEventListener('click', function () {
    if (!resumeToken) {
      return;
    }
    fetch('/sessions/' + encodeURIComponent(sessionId) + '/share', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + resumeToken },
      cache: 'no-store',
    }).then(function (res) {
      return res.json().then(function (body) {
        if (!res.ok) {
          const error = (body && body.error) || {};
          throw new Error((error.message || 'sharing failed') + ' (' + (error.code || res.status) + ')');
        }
        return body;
      });
    }).then(function (body) {
      copyText(body.view_url);
      showNotice('read-only link (copied): ' + body.view_url);
    }, function (e) {
      showNotice('could not share: ' + e.message);
    });
  });

  noticeEl.addEventListener('dblclick', function () {
    showNotice('');
  });

  // --- the session's time limit ---

  // performance.now() is monotonic: a wall-clock change does not move the deadline.
  // endsAtWall is the same deadline on the clock a reloaded page shares, to be kept.
  const timer = { endsAt: null, endsAtWall: null, tick: null };

  // ends_in: seconds from now to the session's time limit, or null for none.
  function setSessionEnd(endsIn) {
    const known = typeof endsIn === 'number' && endsIn >= 0;
    timer.endsAt = known ? performance.now() + endsIn * 1000 : null;
    timer.endsAtWall = known ? Date.now() + endsIn * 1000 : null;
    updateTimer();
    saveSessionInfo();
  }

  // Shows the time left as mm:ss once it is under TIMER_SHOWN_BELOW_S, and sets the next
  // look: when the shown second changes, else when it is due to show. Seconds round up,
  // so 00:00 means the limit has come (the server's ssh-error follows).
  function updateTimer() {
    clearTimeout(timer.tick);
    timer.tick = null;
    const leftMs = timer.endsAt === null ? null : Math.max(0, timer.endsAt - performance.now());
    const shown = leftMs !== null && leftMs < TIMER_SHOWN_BELOW_S * 1000;
    if (shown) {
      const left = Math.ceil(leftMs / 1000);
      const mm = String(Math.floor(left / 60)).padStart(2, '0');
      const ss = String(left % 60).padStart(2, '0');
      timerEl.textContent = 'ends in ' + mm + ':' + ss;
    }
    if (timerEl.hidden === shown) {
      timerEl.hidden = !shown;
      fit();
    }
    if (leftMs !== null && leftMs > 0) {
      const untilShown = leftMs - TIMER_SHOWN_BELOW_S * 1000;
      const wait = shown ? leftMs % 1000 || 1000 : untilShown + 1;
      timer.tick = setTimeout(updateTimer, Math.min(wait, TIMER_LONGEST_WAIT_MS));
    }
  }

  // --- handback: the person ends the session with the job's verdict ---

  // enabled: the session was created with "handback" (never for a viewer); armed: the
  // verdict waiting for its confirm; sent: the verdict went out, the end is on its way.
  const handback = { enabled: false, armed: null, sent: false, timer: null };

  function resetHandback(enabled) {
    handback.enabled = enabled && !viewing;
    handback.armed = null;
    handback.sent = false;
    clearTimeout(handback.timer);
    saveSessionInfo();
  }

  // Kept while the page holds a resume token (see SESSION_KEY); sessionStorage throws in
  // some private modes, and then a reload forgets the buttons and the countdown.
  function saveSessionInfo() {
    if (viewing || !resumeToken) {
      return;
    }
    try {
      const info = { handback: handback.enabled, ends_at: timer.endsAtWall };
      window.sessionStorage.setItem(SESSION_KEY, JSON.stringify(info));
    } catch (e) {
      // kept in memory only
    }
  }

  // A reloaded page about to resume: the buttons and the deadline of the page before it.
  function loadSessionInfo() {
    let info = null;
    try {
      info = JSON.parse(window.sessionStorage.getItem(SESSION_KEY));
    } catch (e) {
      return;
    }
    if (info && typeof info === 'object') {
      resetHandback(info.handback === true);
      if (typeof info.ends_at === 'number') {
        setSessionEnd(Math.max(0, (info.ends_at - Date.now()) / 1000));
      }
    }
  }

  function updateHandback() {
    const shown = handback.enabled && !isFinal();
    if (handbackEl.hidden === shown) {
      handbackEl.hidden = !shown;
      fit();
    }
    handbackChooseEl.hidden = handback.armed !== null;
    handbackConfirmEl.hidden = handback.armed === null;
    // While the socket is down a click would go nowhere.
    const usable = !handback.sent && (state === 'connected' || state === 'draining');
    handbackEl.querySelectorAll('button').forEach(function (button) {
      button.disabled = !usable;
    });
  }

  // The first step only asks. Focus goes to Cancel, the harmless answer, so a second
  // Enter (or a held key repeating) does not confirm.
  function armHandback(verdict) {
    handback.armed = verdict;
    handbackYesEl.textContent = verdict === 'continue' ? 'Yes — continue the job' : 'Yes — fail the job';
    clearTimeout(handback.timer);
    handback.timer = setTimeout(disarmHandback, HANDBACK_CONFIRM_MS);
    updateHandback();
    handbackCancelEl.focus();
  }

  // Back to the two buttons; the keyboard goes back to the terminal if it was here.
  function disarmHandback() {
    const hadFocus = handbackEl.contains(document.activeElement);
    handback.armed = null;
    clearTimeout(handback.timer);
    updateHandback();
    if (hadFocus && !isFinal()) {
      term.focus();
    }
  }

  document.getElementById('handback-continue').addEventListener('click', function () {
    armHandback('continue');
  });
  document.getElementById('handback-fail').addEventListener('click', function () {
    armHandback('fail');
  });
  // detail counts the clicks of a multi-click: the second click of a double-click on
  // "Done" may land on "Yes", and is not a confirm. A key press has detail 0.
  handbackYesEl.addEventListener('click', function (ev) {
    if (ev.detail > 1 || handback.armed === null) {
      return;
    }
    sendEvent('handback', handback.armed);
    handback.sent = true;
    clearTimeout(handback.timer);
    updateHandback();
    setState(state, 'ending the session…');
  });
  handbackCancelEl.addEventListener('click', disarmHandback);
  handbackEl.addEventListener('keydown', function (ev) {
    if (ev.key === 'Escape' && handback.armed !== null) {
      disarmHandback();
    }
  });

  // --- input, resize, title ---

  // Input goes out as binary frames of UTF-8. Some keyboards deliver a character outside
  // the BMP (an emoji) as a lone UTF-16 surrogate; xterm passes it on, and it is not valid
  // text, so it is dropped here rather than sent as U+FFFD or as JSON the server refuses.
  const encoder = new TextEncoder();
  const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
  term.onData(function (s) {
    if (!isOpen() || viewing) {
      return;
    }
    const bytes = encoder.encode(s.replace(LONE_SURROGATE, ''));
    if (bytes.length > 0) {
      socket.send(bytes);
    }
  });

  // onBinary carries bytes as a string of code points 0-255 (e.g. non-UTF-8 mouse
  // reports); they go out as a binary frame so they are not re-encoded as UTF-8.
  term.onBinary(function (s) {
    if (!isOpen() || viewing) {
      return;
    }
    const bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      bytes[i] = s.charCodeAt(i) & 0xff;
    }
    socket.send(bytes);
  });

  term.onResize(function (size) {
    if (!viewing) {
      sendEvent('resize', { cols: size.cols, rows: size.rows });
    }
  });

  let resizeTimer = null;
  window.addEventListener('resize', function () {
    if (viewing) {
      return; // the session's size rules
    }
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(fit, RESIZE_DEBOUNCE_MS);
  });

  term.onTitleChange(function (title) {
    document.title = title || 'alfresco-ssh';
  });

  // --- keyboard shortcuts ---

  // Matches a letter shortcut by the character it types, or, on non-Latin
  // layouts, by the physical key.
  function isLetter(ev, letter) {
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : '';
    if (key === letter) {
      return true;
    }
    return !/^[a-z]$/.test(key) && ev.code === 'Key' + letter.toUpperCase();
  }

  // navigator.clipboard exists only in secure contexts (https, localhost); the
  // textarea fallback works over plain http during the keydown gesture.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).catch(function (e) {
        console.warn('copy failed', e);
      });
      return;
    }
    const area = document.createElement('textarea');
    area.className = 'copy-buffer';
    area.value = text;
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand('copy');
    } catch (e) {
      console.warn('copy failed', e);
    }
    document.body.removeChild(area);
    term.focus();
  }

  function changeFontSize(delta) {
    const current = term.options.fontSize;
    const next = Math.min(FONT_SIZE_MAX, Math.max(FONT_SIZE_MIN, current + delta));
    if (next !== current) {
      term.options.fontSize = next;
      saveFontSize(next);
      fit();
    }
  }

  // Returning false stops xterm from handling the event (and from cancelling it).
  // The handler sees keydown, keypress and keyup; each shortcut acts on keydown only
  // but is withheld from xterm for all three.
  term.attachCustomKeyEventHandler(function (ev) {
    const keydown = ev.type === 'keydown';
    const ctrlOnly = ev.ctrlKey && !ev.altKey && !ev.metaKey;
    if (ctrlOnly && ev.shiftKey && isLetter(ev, 'c')) {
      // Copy, never ^C. preventDefault also keeps Chromium's inspector closed.
      if (keydown) {
        ev.preventDefault();
        if (term.hasSelection()) {
          copyText(term.getSelection());
        }
      }
      return false;
    }
    if (ctrlOnly && ev.shiftKey && isLetter(ev, 'v')) {
      // Left to the browser, whose paste event xterm's textarea turns into input.
      return false;
    }
    if (ctrlOnly && (ev.key === '=' || ev.key === '+' || ev.key === '-' || ev.key === '_')) {
      // Not the browser's zoom: the terminal's own font size, remembered.
      if (keydown) {
        ev.preventDefault();
        changeFontSize(ev.key === '-' || ev.key === '_' ? -1 : 1);
      }
      return false;
    }
    return true;
  });

  // --- right-click paste ---

  // Right-click pastes, as in PuTTY and most desktop terminals, when the page may read the
  // clipboard: a secure context (https, or http on localhost) with the permission granted
  // or still to be asked (the browser then asks once). Where the permission is denied or
  // the API is missing (plain http), the browser's own menu opens instead; xterm.js has
  // moved its textarea under the pointer, so that menu's Paste also reaches the terminal.
  let clipboardRead = 'unavailable';
  if (window.isSecureContext && navigator.clipboard && navigator.clipboard.readText) {
    clipboardRead = 'prompt';
    if (navigator.permissions && navigator.permissions.query) {
      // Firefox has no 'clipboard-read' permission to query; it shows its own Paste button.
      navigator.permissions.query({ name: 'clipboard-read' }).then(function (status) {
        clipboardRead = status.state;
        status.addEventListener('change', function () {
          clipboardRead = status.state;
        });
      }, function () {});
    }
  }

  containerEl.addEventListener('contextmenu', function (ev) {
    if (clipboardRead !== 'granted' && clipboardRead !== 'prompt') {
      return;
    }
    ev.preventDefault();
    navigator.clipboard.readText().then(function (text) {
      if (text && !isFinal()) {
        term.paste(text);
      }
      term.focus();
    }, function (e) {
      // Refused: the next right-click opens the browser's menu.
      clipboardRead = 'denied';
      console.warn('clipboard read refused', e);
    });
  });

  // --- read-only hooks for browser tests ---

  function screenText() {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) {
      const line = buffer.getLine(i);
      // translateToString(true) trims empty cells only; written spaces go too.
      lines.push(line ? line.translateToString(true).replace(/\s+$/, '') : '');
    }
    return lines.join('\n');
  }

  Object.defineProperty(window, 'alfresco', {
    value: Object.freeze({
      term: term,
      state: function () { return state; },
      screenText: screenText,
      // A copy, so a test reads the counters without being able to change them.
      flow: function () { return Object.assign({}, flow); },
      received: function () { return received; },
    }),
    writable: false,
    configurable: false,
    enumerable: true,
  });

  if (resumeToken && !viewing) {
    loadSessionInfo();
  }
  connect();
})();
