/*
 * player.js: plays one session recording (asciicast v2, docs/PROTOCOL.md,
 * "Recordings") in xterm.js. It reads the recording's name from the path, asks
 * for an API token (kept in sessionStorage for this tab only), fetches
 * <name>.cast with it and replays the output and resize events with their
 * timing. Input events are never shown. No inline styles and no eval.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'alfresco-ssh.apiToken';
  // Pauses longer than this play as this, as `alfresco-ssh replay` does by default:
  // an hour at a prompt should not be an hour of watching.
  const IDLE_LIMIT = 2;
  // The position readout is refreshed at least this often while playing.
  const READOUT_MS = 250;

  const statusEl = document.getElementById('status');
  const formEl = document.getElementById('token-form');
  const tokenEl = document.getElementById('token');
  const controlsEl = document.getElementById('controls');
  const playEl = document.getElementById('play');
  const speedEl = document.getElementById('speed');
  const positionEl = document.getElementById('position');
  const containerEl = document.getElementById('terminal');

  // /recordings/<name>: the server serves this page only for plain names.
  const name = decodeURIComponent(location.pathname.split('/').pop());
  const castUrl = '/recordings/' + encodeURIComponent(name) + '.cast';

  // One of: token, loading, ready, playing, paused, ended, error.
  let state = 'loading';
  // The status bar's colours are terminal.css's connection states.
  const STATUS_CLASS = {
    token: 'connecting',
    loading: 'connecting',
    ready: 'connecting',
    playing: 'connected',
    paused: 'connecting',
    ended: 'ended',
    error: 'error',
  };

  function setState(next, text) {
    state = next;
    statusEl.className = 'status status-' + STATUS_CLASS[next];
    statusEl.textContent = text;
  }

  const term = new Terminal({
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace',
    fontSize: 15,
    scrollback: 5000,
    disableStdin: true,
    cursorBlink: false,
    // term.unicode (used by the Unicode 11 addon) is a "proposed" API in xterm 5.
    allowProposedApi: true,
  });
  // The canvas renderer needs no inline style, which the CSP forbids (see terminal.js).
  if (window.CanvasAddon) {
    try {
      term.loadAddon(new CanvasAddon.CanvasAddon());
    } catch (e) {
      console.warn('canvas renderer unavailable, using the DOM renderer', e);
    }
  }
  term.loadAddon(new Unicode11Addon.Unicode11Addon());
  term.unicode.activeVersion = '11';
  term.open(containerEl);

  // --- the token ---

  // sessionStorage throws when storage is disabled; the token then lives in this page only.
  function storedToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (e) {
      return '';
    }
  }

  function storeToken(token) {
    try {
      if (token) {
        window.sessionStorage.setItem(TOKEN_KEY, token);
      } else {
        window.sessionStorage.removeItem(TOKEN_KEY);
      }
    } catch (e) {
      // not kept; asked again next time
    }
  }

  function askForToken(text) {
    formEl.hidden = false;
    controlsEl.hidden = true;
    setState(text ? 'error' : 'token', text || 'enter an API token to play ' + name);
    tokenEl.focus();
  }

  formEl.addEventListener('submit', function (event) {
    event.preventDefault();
    const token = tokenEl.value.trim();
    if (token) {
      storeToken(token);
      load(token);
    }
  });

  // --- fetching and parsing ---

  function load(token) {
    formEl.hidden = true;
    setState('loading', 'loading ' + name + '…');
    fetch(castUrl, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' })
      .then(function (res) {
        if (res.status === 401) {
          storeToken('');
          askForToken('the API token was refused (401): enter another');
          return null;
        }
        if (res.status === 404) {
          setState('error', 'no such recording: ' + name + ' (404)');
          return null;
        }
        if (!res.ok) {
          return res.json().then(
            function (body) { throw new Error(body.error.message + ' (' + res.status + ')'); },
            function () { throw new Error('the server answered ' + res.status); });
        }
        return res.text();
      })
      .then(function (text) {
        if (text !== null) {
          start(parse(text));
        }
      })
      .catch(function (e) {
        setState('error', 'cannot play ' + name + ': ' + e.message);
      });
  }

  // asciicast v2: a header line, then [seconds, code, text] lines. Errors name the line.
  function parse(text) {
    const lines = text.split('\n');
    let header = null;
    const events = [];
    let previous = 0;
    let played = 0;
    for (let i = 0; i < lines.length; i++) {
      if (lines[i].trim() === '') {
        continue;
      }
      let value;
      try {
        value = JSON.parse(lines[i]);
      } catch (e) {
        throw new Error('line ' + (i + 1) + ' is not JSON');
      }
      if (header === null) {
        if (!value || value.version !== 2 || !(value.width > 0) || !(value.height > 0)) {
          throw new Error('line ' + (i + 1) + ': not an asciicast v2 header');
        }
        header = value;
        continue;
      }
      if (!Array.isArray(value) || value.length !== 3 || typeof value[0] !== 'number'
          || typeof value[1] !== 'string' || typeof value[2] !== 'string') {
        throw new Error('line ' + (i + 1) + ': an event must be [seconds, code, text]');
      }
      // Playing time: each gap cut to IDLE_LIMIT, times that go backwards count as 0.
      played += Math.min(Math.max(value[0] - previous, 0), IDLE_LIMIT);
      previous = Math.max(previous, value[0]);
      if (value[1] === 'o' || value[1] === 'r') {
        events.push({ at: played, code: value[1], data: value[2] });
      }
    }
    if (header === null) {
      throw new Error('the file is empty');
    }
    return { header: header, events: events, duration: played };
  }

  // --- playback ---

  let cast = null;
  let next = 0; // index of the next event to apply
  let speed = Number(speedEl.value);
  // While playing, the position is anchorPosition + (now - anchorTime) × speed.
  let anchorPosition = 0;
  let anchorTime = 0;
  let timer = null;

  function position() {
    if (state !== 'playing') {
      return anchorPosition;
    }
    return anchorPosition + (performance.now() - anchorTime) / 1000 * speed;
  }

  function clock(seconds) {
    // Sums of float gaps land a hair below whole seconds; a millisecond is not news.
    const s = Math.floor(seconds + 0.001);
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  function readout(at) {
    positionEl.textContent = clock(Math.min(at, cast.duration)) + ' / ' + clock(cast.duration);
  }

  function start(parsed) {
    cast = parsed;
    controlsEl.hidden = false;
    rewind();
    setState('ready', 'recording ' + name + (cast.header.title ? ' of ' + cast.header.title : '')
      + ': press Play');
    playEl.focus();
  }

  function rewind() {
    term.reset();
    term.resize(cast.header.width, cast.header.height);
    next = 0;
    anchorPosition = 0;
    readout(0);
  }

  function apply(event) {
    if (event.code === 'o') {
      term.write(event.data);
      return;
    }
    const size = /^(\d+)x(\d+)$/.exec(event.data);
    if (size && Number(size[1]) > 0 && Number(size[2]) > 0) {
      term.resize(Number(size[1]), Number(size[2]));
    }
  }

  // Applies every event that is due, then sleeps until the next one (or the next readout).
  function step() {
    timer = null;
    const at = position();
    while (next < cast.events.length && cast.events[next].at <= at) {
      apply(cast.events[next]);
      next++;
    }
    readout(at);
    if (next >= cast.events.length) {
      anchorPosition = cast.duration;
      readout(cast.duration);
      playEl.textContent = 'Play again';
      setState('ended', 'recording ' + name + ': the end');
      return;
    }
    const wait = (cast.events[next].at - at) / speed * 1000;
    timer = setTimeout(step, Math.max(0, Math.min(wait, READOUT_MS)));
  }

  function play() {
    if (state === 'ended') {
      rewind();
    }
    anchorTime = performance.now();
    playEl.textContent = 'Pause';
    setState('playing', 'playing ' + name + ' at ' + speed + '×');
    step();
  }

  function pause() {
    anchorPosition = position();
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    playEl.textContent = 'Play';
    setState('paused', 'paused');
    readout(anchorPosition);
  }

  playEl.addEventListener('click', function () {
    if (state === 'playing') {
      pause();
    } else if (state === 'ready' || state === 'paused' || state === 'ended') {
      play();
    }
  });

  speedEl.addEventListener('change', function () {
    // Re-anchor, so the position so far keeps the old speed.
    anchorPosition = position();
    anchorTime = performance.now();
    speed = Number(speedEl.value);
    if (state === 'playing') {
      setState('playing', 'playing ' + name + ' at ' + speed + '×');
    }
  });

  // --- read-only hooks for browser tests (the same names as terminal.js's) ---

  function screenText() {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) {
      const line = buffer.getLine(i);
      lines.push(line ? line.translateToString(true).replace(/\s+$/, '') : '');
    }
    return lines.join('\n');
  }

  Object.defineProperty(window, 'alfresco', {
    value: Object.freeze({
      term: term,
      state: function () { return state; },
      screenText: screenText,
    }),
    writable: false,
    configurable: false,
    enumerable: true,
  });

  const token = storedToken();
  if (token) {
    load(token);
  } else {
    askForToken('');
  }
})();
