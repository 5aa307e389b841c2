// keypool live dashboard: one pool's key counts, a chart of them over the last
// minutes and a feed of its key events, fed by the keyEvents subscription
// (graphql-transport-ws over a WebSocket at /graphql) and the stats query; a
// selector and a table of every pool (the pools query) choose the pool, which
// ?pool=NAME names in the URL. No libraries, no build step.
(function () {
  'use strict';

  var ENDPOINT = '/graphql';
  var DEFAULT_POOL = 'default';
  var FEED_MAX = 100;            // events kept in the feed
  var CHART_SECONDS = chartWindow(); // the chart's window: ?minutes=N, 5 by default
  var STATS_MIN_GAP_MS = 500;    // stats is re-queried at most this often
  var STATS_REFRESH_MS = 5000;   // and at least this often while live (waiting has no events)
  var POOLS_MIN_GAP_MS = 2000;   // pools is re-queried at most this often
  var POOLS_REFRESH_MS = 15000;  // and at least this often
  var ACK_TIMEOUT_MS = 10000;    // a connection not acknowledged by then is dropped
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var STABLE_MS = 10000;         // a connection up this long resets the backoff

  var STATS_QUERY =
    'query DashboardStats($pool: String) { stats(pool: $pool) { total available blocked cooling quarantined waiting } }';
  // The counts shown, by stats field, in the cards and the pools' table.
  var COUNTS = ['total', 'available', 'blocked', 'cooling', 'quarantined', 'waiting'];
  var POOLS_QUERY = 'query DashboardPools { pools { name stats { total available blocked cooling quarantined waiting } } }';
  var HISTORY_QUERY = 'query DashboardHistory($pool: String, $since: Time) {' +
    ' history(pool: $pool, since: $since) { at total available blocked } }';
  var KEY_FIELDS = 'id pool status name createdAt expiresAt coolingUntil lease { holder fence acquiredAt expiresAt }' +
    ' history { timesAcquired leasesExpired lastAcquiredAt failures consecutiveFailures }';
  var KEYS_QUERY = 'query DashboardKeys($pool: String, $status: KeyStatus, $after: String) {' +
    ' keys(pool: $pool, status: $status, first: 50, after: $after) { nodes { ' + KEY_FIELDS + ' }' +
    ' pageInfo { endCursor hasNextPage } } }';
  var KEY_QUERY = 'query DashboardKey($id: ID!) { key(id: $id) { ' + KEY_FIELDS + ' } }';
  var GENERATE_MUTATION = 'mutation DashboardGenerate($pool: String, $count: Int!) {' +
    ' generateKeys(pool: $pool, count: $count) { id } }';
  var RELEASE_MUTATION = 'mutation DashboardRelease($id: ID!) { unblockKey(id: $id) { ' + KEY_FIELDS + ' } }';
  var DELETE_MUTATION = 'mutation DashboardDelete($id: ID!) { deleteKey(id: $id) }';
  var RESTORE_MUTATION = 'mutation DashboardRestore($id: ID!) { restoreKey(id: $id) { ' + KEY_FIELDS + ' } }';
  var EVENTS_SUBSCRIPTION =
    'subscription DashboardKeyEvents($pool: String, $after: Int) {' +
    ' keyEvents(pool: $pool, after: $after) { seq type keyId pool at holder } }';

  // chartWindow reads the chart's window from ?minutes= (1 to 1440, the server's
  // 24 hours of history).
  function chartWindow() {
    var minutes = parseInt(new URLSearchParams(location.search).get('minutes'), 10);
    return (minutes >= 1 && minutes <= 1440 ? minutes : 5) * 60;
  }

  // A pool name as the server takes it; anything else in ?pool= means the default pool.
  var POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

  function poolFromURL() {
    var name = new URLSearchParams(location.search).get('pool');
    return name && POOL_NAME.test(name) ? name : DEFAULT_POOL;
  }

  var el = {
    status: document.getElementById('status'),
    poolSelect: document.getElementById('pool'),
    total: document.getElementById('count-total'),
    available: document.getElementById('count-available'),
    blocked: document.getElementById('count-blocked'),
    cooling: document.getElementById('count-cooling'),
    quarantined: document.getElementById('count-quarantined'),
    waiting: document.getElementById('count-waiting'),
    shares: ['blocked', 'cooling', 'quarantined'].map(function (n) { return document.getElementById('share-' + n); }),
    store: document.getElementById('store'),
    feed: document.getElementById('feed'),
    feedEmpty: document.getElementById('feed-empty'),
    lastSeq: document.getElementById('last-seq'),
    feedFilter: document.getElementById('feed-filter'),
    feedPause: document.getElementById('feed-pause'),
    chart: document.getElementById('chart'),
    chartTitle: document.getElementById('chart-title'),
    pools: document.getElementById('pools'),
    poolsNote: document.getElementById('pools-note'),
    keys: document.getElementById('keys'),
    keysNote: document.getElementById('keys-note'),
    keysStatus: document.getElementById('keys-status'),
    keysRefresh: document.getElementById('keys-refresh'),
    keysMore: document.getElementById('keys-more'),
    generate: document.getElementById('generate'),
    generateCount: document.getElementById('generate-count'),
    keyPanel: document.getElementById('key-panel'),
    keyID: document.getElementById('key-id'),
    keyFields: document.getElementById('key-fields'),
    keyMessage: document.getElementById('key-message'),
    keyRelease: document.getElementById('key-release'),
    keyRestore: document.getElementById('key-restore'),
    keyDelete: document.getElementById('key-delete'),
    keyClose: document.getElementById('key-close'),
  };
  el.chartTitle.textContent = 'Keys, last ' + (CHART_SECONDS === 60 ? 'minute' : CHART_SECONDS / 60 + ' minutes');
  el.chart.dataset.historyPoints = '0';

  // ---- requests ---------------------------------------------------------------

  // graphql posts one query and resolves to its data, or rejects. With access
  // control on, it sends the tab's token (token.js), and asks for one on a 401.
  var RETRY = {};
  function graphql(query, operationName, variables, retried) {
    var headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    var sent = keypoolToken.authorization();
    if (sent) headers.Authorization = sent;
    return fetch(ENDPOINT, {
      method: 'POST',
      headers: headers,
      body: JSON.stringify({ query: query, operationName: operationName, variables: variables || {} }),
      cache: 'no-store',
    }).then(function (res) {
      if (res.status === 401 && !retried && keypoolToken.retryAfter(sent)) return RETRY;
      return res.json();
    }).then(function (body) {
      if (body === RETRY) return graphql(query, operationName, variables, true);
      if (!body || !body.data || body.errors && body.errors.length) {
        throw new Error(body && body.errors && body.errors[0] ? body.errors[0].message : 'no data');
      }
      return body.data;
    });
  }

  // throttled returns a function that asks for run() (which returns a promise
  // that never rejects) to happen soon: one run at a time, starts at least gapMs
  // apart, and one more run after the current one when asked during it, since
  // its answer may predate what prompted the ask. busy() says whether one runs.
  function throttled(run, gapMs) {
    var st = { inFlight: false, again: false, timer: 0, lastStart: 0 };
    function start() {
      st.timer = 0;
      st.inFlight = true;
      st.again = false;
      st.lastStart = Date.now();
      run().then(function () {
        st.inFlight = false;
        if (st.again) request();
      });
    }
    function request() {
      if (st.inFlight) {
        st.again = true;
        return;
      }
      if (st.timer) return;
      st.timer = setTimeout(start, Math.max(0, st.lastStart + gapMs - Date.now()));
    }
    request.busy = function () { return st.inFlight; };
    return request;
  }

  // ---- the selected pool --------------------------------------------------------
  //
  // Everything but the pools table is of one pool. Choosing another clears the
  // counts, chart and feed, ends the old subscription and starts one on the new
  // pool's stream, with fresh stats: a seq counts in one pool's stream only, so
  // there is nothing to resume across pools.

  var pool = poolFromURL();

  function selectPool(name) {
    if (name === pool || !POOL_NAME.test(name)) return;
    pool = name;
    var params = new URLSearchParams(location.search);
    if (name === DEFAULT_POOL) params.delete('pool'); else params.set('pool', name);
    var search = params.toString();
    history.replaceState(null, '', location.pathname + (search ? '?' + search : '') + location.hash);

    counts = null;
    lastSeq = null;
    samples = [];
    pendingFeed = [];
    held = 0;
    if (paused) el.feedPause.textContent = 'Resume';
    el.feed.replaceChildren();
    el.feedEmpty.hidden = false;
    el.lastSeq.textContent = '';
    [el.total, el.available, el.blocked, el.cooling, el.quarantined, el.waiting].forEach(function (o) { o.textContent = '–'; });
    el.shares.forEach(function (o) { o.textContent = ''; });
    drawChart(Date.now());
    loadHistory();
    loadKeys(true);
    renderPools();
    requestStats();
    if (socket.ws && socket.state === 'live') {
      send(socket.ws, { id: String(socket.subId), type: 'complete' });
      subscribe(socket.ws);
    } // else the next connection subscribes to the new pool
  }

  el.poolSelect.addEventListener('change', function () { selectPool(el.poolSelect.value); });
  el.pools.addEventListener('click', function (e) {
    var row = e.target.closest('tr[data-pool]');
    if (row) selectPool(row.dataset.pool);
  });

  // ---- every pool ------------------------------------------------------------------
  //
  // The pools query fills the selector and the table, every POOLS_REFRESH_MS and
  // whenever an event names a pool it does not list. The selected pool's row
  // shows the live counts, so that it agrees with the counts above.

  var pools = null;              // the last pools answer: [{name, stats}]
  var poolsAt = null;            // when it came
  var shownNames = '';           // the selector's options, joined with '\n'
  var selectedCells = null;      // the selected row's count cells, by name

  function queryPools() {
    return graphql(POOLS_QUERY, 'DashboardPools').then(function (data) {
      pools = data.pools;
      poolsAt = new Date();
      renderPools();
    }, function (err) {
      console.warn('keypool: pools query failed:', err);
    });
  }
  var requestPools = throttled(queryPools, POOLS_MIN_GAP_MS);

  function knowsPool(name) {
    return !!pools && pools.some(function (p) { return p.name === name; });
  }

  function renderPools() {
    // The selector: every pool, and the selected one even before it is made.
    var names = (pools || []).map(function (p) { return p.name; });
    if (names.indexOf(pool) < 0) names = names.concat(pool).sort();
    if (names.join('\n') !== shownNames) {
      shownNames = names.join('\n');
      el.poolSelect.replaceChildren.apply(el.poolSelect, names.map(function (name) {
        var option = document.createElement('option');
        option.value = name;
        option.textContent = name;
        return option;
      }));
    }
    el.poolSelect.value = pool;

    // The table: the pools the server lists.
    selectedCells = null;
    if (!pools) return;
    el.pools.replaceChildren.apply(el.pools, pools.map(function (p) {
      var tr = document.createElement('tr');
      tr.dataset.pool = p.name;
      var th = document.createElement('th');
      th.scope = 'row';
      var button = document.createElement('button');
      button.type = 'button';
      button.textContent = p.name;
      th.append(button);
      tr.append(th);
      var cells = {};
      COUNTS.forEach(function (n) {
        var td = document.createElement('td');
        td.className = n;
        td.textContent = numberFormat.format(p.stats[n]);
        cells[n] = td;
        tr.append(td);
      });
      tr.dataset.flags = poolFlags(p.stats).join(' ');
      // Utilisation: the shares blocked, cooling and quarantined, as a bar of three
      // colours behind the pool's name.
      var shares = [], end = 0;
      ['blocked', 'cooling', 'quarantined'].forEach(function (n) {
        var share = p.stats.total ? p.stats[n] / p.stats.total * 100 : 0;
        end += share;
        th.style.setProperty('--' + n + '-end', end + '%');
        if (share) shares.push(Math.round(share) + '% ' + n);
      });
      th.title = p.name + ': ' + (shares.join(', ') || 'none held') +
        (tr.dataset.flags ? '; ' + poolFlags(p.stats).map(flagText).join(', ') : '');
      if (p.name === pool) {
        tr.className = 'selected';
        tr.setAttribute('aria-current', 'true');
        selectedCells = cells;
      }
      return tr;
    }));
    el.poolsNote.textContent = pools.length + (pools.length === 1 ? ' pool' : ' pools') +
      ', as of ' + timeFormat.format(poolsAt);
    scheduleRender();
  }

  // poolFlags names what needs an operator's eye in a pool: acquires waiting, and
  // fewer than a fifth of its keys available.
  function poolFlags(st) {
    var flags = [];
    if (st.waiting > 0) flags.push('waiting');
    if (st.total > 0 && st.available * 5 < st.total) flags.push('low');
    return flags;
  }

  function flagText(flag) {
    return { waiting: 'acquires are waiting', low: 'under a fifth available', expiring: 'its leases keep running out' }[flag];
  }

  // ---- counts ---------------------------------------------------------------
  //
  // counts is the last stats answer plus the events received after it. Events
  // that arrive while a stats query is in flight may or may not be in its
  // answer, so they are not applied; instead one more query follows. DELETED
  // and EXPIRED do not say whether the key was AVAILABLE or BLOCKED, so they
  // take one off total and ask stats again (debounced) for the split. No event
  // says that an acquire started or stopped waiting: stats is asked again every
  // STATS_REFRESH_MS for waiting (which also mends any drift).

  var counts = null;             // {total, available, blocked, cooling, quarantined, waiting} once known
  var lastSeq = null;            // seq of the last event seen in pool's stream, for resuming
  var statsFailures = 0;

  function queryStats() {
    var asked = pool;
    return graphql(STATS_QUERY, 'DashboardStats', { pool: asked }).then(function (data) {
      if (asked !== pool) return; // selectPool has asked for the new pool's
      var s = data.stats;
      counts = { total: s.total, available: s.available, blocked: s.blocked, cooling: s.cooling, quarantined: s.quarantined, waiting: s.waiting };
      statsFailures = 0;
      scheduleRender();
    }, function (err) {
      console.warn('keypool: stats query failed:', err);
      // Try again, backing off, while the live connection is up; a reconnect
      // asks anyway.
      statsFailures++;
      if (socket.state === 'live') {
        setTimeout(requestStats, Math.min(BACKOFF_MAX_MS, 1000 * Math.pow(2, statsFailures - 1)));
      }
    });
  }
  var requestStats = throttled(queryStats, STATS_MIN_GAP_MS);

  function applyEvent(ev) {
    // The subscription is of pool; an event of another pool (which a server may
    // send by mistake) would count in the wrong pool. The gap it leaves in the
    // seqs asks stats again at the next event.
    if (ev.pool !== pool) return;
    // seq grows by one per event, so anything else means events were missed
    // (the replay ring moved on) or the server started afresh (seq went back):
    // either way, the counts come from stats again.
    var gap = lastSeq !== null && ev.seq !== lastSeq + 1;
    lastSeq = ev.seq;
    pushFeed(ev);
    if (!knowsPool(ev.pool)) requestPools();
    if (gap) {
      requestStats();
      return;
    }
    if (requestStats.busy() || !counts) {
      requestStats();
      return;
    }
    switch (ev.type) {
      case 'GENERATED':
      case 'IMPORTED':
        counts.total++;
        counts.available++;
        break;
      case 'COOLED': // after UNBLOCKED or RELEASED, which counted it AVAILABLE
        counts.available--;
        counts.cooling++;
        break;
      case 'QUARANTINED':
        counts.available--;
        counts.quarantined++;
        break;
      case 'RECOVERED':
        counts.cooling--;
        counts.available++;
        break;
      case 'ACQUIRED':
        counts.available--;
        counts.blocked++;
        break;
      case 'UNBLOCKED':
      case 'RELEASED':
        counts.blocked--;
        counts.available++;
        break;
      case 'DELETED':
      case 'EXPIRED':
        counts.total--;
        requestStats();
        break;
      default:
        requestStats();
    }
    if (counts.available < 0 || counts.blocked < 0 || counts.cooling < 0 || counts.quarantined < 0 || counts.total < 0) {
      counts.available = Math.max(0, counts.available);
      counts.blocked = Math.max(0, counts.blocked);
      counts.cooling = Math.max(0, counts.cooling);
      counts.quarantined = Math.max(0, counts.quarantined);
      counts.total = Math.max(0, counts.total);
      requestStats();
    }
    scheduleRender();
  }

  // ---- the graphql-transport-ws client ---------------------------------------
  //
  // Protocol: connection_init -> connection_ack, then subscribe {id, payload};
  // the server sends next/error/complete for that id and ping (answered with
  // pong); complete from the client ends a subscription. Any end of the stream —
  // a closed socket, an error such as SLOW_CONSUMER, a complete — reconnects
  // with exponential backoff and resumes the selected pool's stream with after:
  // lastSeq, so the replay ring fills the gap.

  var socket = { ws: null, state: 'connecting', attempt: 0, liveSince: 0, timer: 0, ackTimer: 0, subId: 0, offline: false };

  function wsURL() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + ENDPOINT;
  }

  // subscribe starts a subscription to the selected pool's events, under a new
  // id: messages of any earlier one are ignored.
  function subscribe(ws) {
    socket.subId++;
    send(ws, {
      id: String(socket.subId),
      type: 'subscribe',
      payload: { query: EVENTS_SUBSCRIPTION, operationName: 'DashboardKeyEvents', variables: { pool: pool, after: lastSeq } },
    });
  }

  function connect() {
    socket.timer = 0;
    setStatus(socket.attempt ? 'reconnecting' : 'connecting');
    var ws;
    try {
      ws = new WebSocket(wsURL(), 'graphql-transport-ws');
    } catch (err) {
      console.warn('keypool: websocket:', err);
      reconnectLater();
      return;
    }
    socket.ws = ws;
    var sent = keypoolToken.authorization();
    ws.onopen = function () {
      send(ws, { type: 'connection_init', payload: sent ? { Authorization: sent } : {} });
      socket.ackTimer = setTimeout(function () { ws.close(4408, 'Connection initialisation timeout'); }, ACK_TIMEOUT_MS);
    };
    ws.onmessage = function (msg) {
      if (ws !== socket.ws) return;
      var m;
      try { m = JSON.parse(msg.data); } catch (err) { ws.close(4400, 'Invalid message'); return; }
      switch (m.type) {
        case 'connection_ack':
          clearTimeout(socket.ackTimer);
          socket.liveSince = Date.now();
          subscribe(ws);
          setStatus('live');
          requestStats(); // fresh counts on every (re)connect
          requestPools();
          break;
        case 'ping':
          send(ws, { type: 'pong' });
          break;
        case 'next':
          if (m.id !== String(socket.subId) || !m.payload) break;
          if (m.payload.data && m.payload.data.keyEvents) {
            applyEvent(m.payload.data.keyEvents);
          }
          if (m.payload.errors && m.payload.errors.length) {
            streamFailed(ws, m.payload.errors);
          }
          break;
        case 'error':
          if (m.id === String(socket.subId)) streamFailed(ws, m.payload);
          break;
        case 'complete':
          if (m.id === String(socket.subId)) ws.close(1000, 'Resubscribing');
          break;
      }
    };
    ws.onclose = function (ev) {
      clearTimeout(socket.ackTimer);
      if (ws !== socket.ws) return;
      socket.ws = null;
      if (ev.code === 4403 && !keypoolToken.retryAfter(sent)) { // access control: no token given
        setStatus('offline');
        return;
      }
      if (socket.liveSince && Date.now() - socket.liveSince >= STABLE_MS) socket.attempt = 0;
      socket.liveSince = 0;
      reconnectLater();
    };
  }

  // streamFailed ends a stream that the server ended with errors. SLOW_CONSUMER
  // resumes after lastSeq; any other error (the server may refuse an after it
  // does not know, for one) starts afresh from live events and stats.
  function streamFailed(ws, errors) {
    console.warn('keypool: keyEvents:', errors);
    var slow = Array.isArray(errors) && errors.some(function (e) {
      return e && e.extensions && e.extensions.code === 'SLOW_CONSUMER';
    });
    if (!slow) lastSeq = null;
    ws.close(1000, 'Resubscribing');
  }

  function send(ws, message) {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  function reconnectLater() {
    if (socket.timer) return;
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, socket.attempt));
    delay = delay / 2 + Math.random() * delay / 2; // jitter, so many tabs do not reconnect in step
    if (socket.offline) {
      // The 'online' event reconnects at once; this is only a fallback.
      delay = BACKOFF_MAX_MS;
      setStatus('offline');
    } else {
      socket.attempt++;
      setStatus('reconnecting', Math.round(delay / 1000));
    }
    socket.timer = setTimeout(connect, delay);
  }

  // Coming back online or to the tab: no need to sit out the backoff.
  function reconnectNow() {
    if (socket.ws || !socket.timer) return;
    clearTimeout(socket.timer);
    connect();
  }
  // Offline, the socket is dead or soon will be: close it rather than wait for
  // timeouts, and reconnect (resuming after lastSeq) when the browser is back.
  window.addEventListener('offline', function () {
    socket.offline = true;
    if (socket.ws) socket.ws.close(1000, 'Offline');
    else setStatus('offline');
  });
  window.addEventListener('online', function () {
    socket.offline = false;
    socket.attempt = 0;
    reconnectNow();
  });
  // Leaving the page: close the socket, so that the server ends the subscription
  // now rather than whenever the browser drops the page (it may keep it in its
  // back/forward cache, socket and all); coming back from that cache reconnects.
  window.addEventListener('pagehide', function () {
    if (socket.ws) socket.ws.close(1000, 'Leaving');
  });
  window.addEventListener('pageshow', function (e) {
    if (e.persisted) reconnectNow();
  });
  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) reconnectNow();
  });

  function setStatus(state, seconds) {
    socket.state = state;
    el.status.setAttribute('data-state', state);
    el.status.textContent =
      state === 'live' ? 'live' :
      state === 'connecting' ? 'connecting…' :
      state === 'offline' ? 'offline' :
      'reconnecting' + (seconds ? ' in ' + seconds + ' s…' : '…');
  }

  // ---- the feed ----------------------------------------------------------------
  //
  // Bursts (generateKeys of thousands) arrive faster than the page can draw, so
  // events queue and are drawn once per frame; only the newest FEED_MAX matter.
  // Paused, the feed stands still and the events wait (the newest FEED_MAX of
  // them) until it resumes; the counts and the chart go on. The filter shows the
  // events whose type, key or holder contains its text, and hides the others.

  var pendingFeed = [];
  var paused = false;
  var held = 0; // events that arrived while paused

  function pushFeed(ev) {
    pendingFeed.push(ev);
    if (pendingFeed.length > FEED_MAX) pendingFeed.splice(0, pendingFeed.length - FEED_MAX);
    if (paused) {
      held++;
      el.feedPause.textContent = 'Resume (' + numberFormat.format(held) + ' new)';
      return;
    }
    scheduleRender();
  }

  el.feedPause.addEventListener('click', function () {
    paused = !paused;
    el.feedPause.setAttribute('aria-pressed', String(paused));
    el.feedPause.textContent = paused ? 'Resume' : 'Pause';
    held = 0;
    if (!paused) scheduleRender();
  });

  function feedText() { return el.feedFilter.value.trim().toLowerCase(); }

  function showIfMatches(li, text) { li.hidden = text !== '' && li.dataset.text.indexOf(text) < 0; }

  el.feedFilter.addEventListener('input', function () {
    var text = feedText();
    for (var li = el.feed.firstElementChild; li; li = li.nextElementSibling) showIfMatches(li, text);
  });

  var timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });

  function feedItem(ev, text) {
    var li = document.createElement('li');
    li.dataset.text = [ev.type, ev.keyId, ev.holder || ''].join(' ').toLowerCase();
    showIfMatches(li, text);
    var when = new Date(ev.at);
    var time = document.createElement('time');
    time.dateTime = ev.at;
    time.textContent = isNaN(when) ? '' : timeFormat.format(when);
    var type = document.createElement('span');
    type.className = 'type ' + ev.type;
    type.textContent = ev.type;
    var key = document.createElement('button');
    key.type = 'button';
    key.className = 'key';
    key.dataset.id = ev.keyId;
    key.title = ev.keyId + '  (seq ' + ev.seq + ')';
    key.append(document.createElement('code'));
    key.firstChild.textContent = ev.keyId;
    var holder = document.createElement('span');
    holder.className = 'holder';
    if (ev.holder) {
      holder.textContent = ev.holder;
      holder.title = 'held by ' + ev.holder;
    }
    li.append(time, type, key, holder);
    return li;
  }

  function drawFeed() {
    if (!pendingFeed.length || paused) return;
    var frag = document.createDocumentFragment();
    var text = feedText();
    for (var i = pendingFeed.length - 1; i >= 0; i--) frag.append(feedItem(pendingFeed[i], text));
    pendingFeed = [];
    el.feed.prepend(frag);
    while (el.feed.childElementCount > FEED_MAX) el.feed.lastElementChild.remove();
    el.feedEmpty.hidden = true;
    el.lastSeq.textContent = lastSeq === null ? '' : 'seq ' + lastSeq;
  }

  // ---- rendering -----------------------------------------------------------------

  var renderQueued = false;
  var numberFormat = new Intl.NumberFormat();

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(render);
  }

  function render() {
    renderQueued = false;
    drawFeed();
    if (!counts) return;
    COUNTS.forEach(function (n) {
      var text = numberFormat.format(counts[n]);
      el[n].textContent = text;
      if (selectedCells) selectedCells[n].textContent = text;
    });
    // Utilisation: the share of the pool under lease.
    ['blocked', 'cooling', 'quarantined'].forEach(function (n, i) {
      el.shares[i].textContent = counts.total ? Math.round(counts[n] / counts.total * 100) + '% of the keys' : '';
    });
  }

  // ---- the store's health ------------------------------------------------------------
  //
  // /readyz, asked for JSON, says which store serves the pool and, when it cannot
  // serve, why. Read with the pools.

  function queryHealth() {
    return fetch('/readyz', { headers: { Accept: 'application/json' }, cache: 'no-store' }).then(function (res) {
      return res.json();
    }).then(function (r) {
      el.store.dataset.ready = String(r.ready);
      // A Redis store's replicas are the servers that follow its pools' streams.
      var replicas = r.store !== 'memory' && r.replicas ? ' · ' + r.replicas + (r.replicas === 1 ? ' replica' : ' replicas') : '';
      el.store.textContent = r.store + (r.ready ? ' store · ready' + replicas : ' store · not ready: ' + r.reason);
    }, function () {
      el.store.dataset.ready = 'false';
      el.store.textContent = 'server unreachable';
    });
  }

  // ---- keys: the listing, a key's panel, and actions -------------------------------
  //
  // The list is the keys query's pages of the selected pool (50 a page, "More keys"
  // for the next), filtered by state; it is read again on a change of pool or
  // filter, on Refresh, and after an action. A key's id, in the list or the feed,
  // opens its panel: its state, lease and history, and the actions that apply.
  // Every action is one request to /graphql, as any client's.

  var keyRows = [];        // the keys listed
  var keysCursor = null;   // the endCursor of the last page read
  var keysLoading = 0;     // the number of the listing being read; older answers are dropped

  function loadKeys(reset) {
    var asked = { pool: pool, status: el.keysStatus.value || null, n: ++keysLoading };
    var after = reset ? null : keysCursor;
    if (reset) {
      keyRows = [];
      keysCursor = null;
    }
    return graphql(KEYS_QUERY, 'DashboardKeys', { pool: asked.pool, status: asked.status, after: after }).then(function (data) {
      if (asked.n !== keysLoading) return;
      keyRows = keyRows.concat(data.keys.nodes);
      keysCursor = data.keys.pageInfo.endCursor || keysCursor;
      el.keysMore.hidden = !data.keys.pageInfo.hasNextPage;
      el.keysNote.textContent = keyRows.length ? keyRows.length + (keyRows.length === 1 ? ' key' : ' keys') +
        (data.keys.pageInfo.hasNextPage ? ' so far' : '') + ', as of ' + timeFormat.format(new Date()) : 'No keys.';
      renderKeys();
    }, function (err) {
      if (asked.n === keysLoading) el.keysNote.textContent = 'Could not list the keys: ' + err.message;
    });
  }

  // leasedFor says how long a key has been held, in whole seconds or minutes.
  function leasedFor(k) {
    if (!k.lease) return '';
    var s = Math.max(0, Math.round((Date.now() - Date.parse(k.lease.acquiredAt)) / 1000));
    return s < 120 ? s + ' s' : Math.round(s / 60) + ' min';
  }

  // keyFlags: a key whose leases keep running out (at least 3, half of them or more)
  // is held by clients that die or forget it.
  function keyFlags(k) {
    var h = k.history;
    return h.leasesExpired >= 3 && h.leasesExpired * 2 >= h.timesAcquired ? ['expiring'] : [];
  }

  function renderKeys() {
    el.keys.replaceChildren.apply(el.keys, keyRows.map(function (k) {
      var tr = document.createElement('tr');
      tr.dataset.flags = keyFlags(k).join(' ');
      var th = document.createElement('th');
      th.scope = 'row';
      var button = document.createElement('button');
      button.type = 'button';
      button.dataset.id = k.id;
      button.textContent = k.id;
      button.title = k.id + (tr.dataset.flags ? ': ' + flagText('expiring') : '');
      th.append(button);
      var cells = [k.status, k.lease && k.lease.holder || '', leasedFor(k),
        numberFormat.format(k.history.timesAcquired) + (k.history.leasesExpired ? ' (' + numberFormat.format(k.history.leasesExpired) + ' ran out)' : '')];
      tr.append(th);
      cells.forEach(function (text, i) {
        var td = document.createElement('td');
        td.textContent = text;
        if (i === 0) td.className = k.status;
        if (i === 1) { td.className = 'holder'; td.title = text; }
        tr.append(td);
      });
      return tr;
    }));
  }

  el.keysStatus.addEventListener('change', function () { loadKeys(true); });
  el.keysRefresh.addEventListener('click', function () { loadKeys(true); });
  el.keysMore.addEventListener('click', function () { loadKeys(false); });
  el.generate.addEventListener('submit', function (e) {
    e.preventDefault();
    var count = parseInt(el.generateCount.value, 10);
    graphql(GENERATE_MUTATION, 'DashboardGenerate', { pool: pool, count: count }).then(function (data) {
      el.keysNote.textContent = 'Generated ' + numberFormat.format(data.generateKeys.length) + ' keys in ' + pool + '.';
      loadKeys(true);
      requestStats();
      requestPools();
    }, function (err) {
      el.keysNote.textContent = 'Could not generate: ' + err.message;
    });
  });

  // The key panel.
  var shownKey = null;       // the key the panel shows
  var deleteArmed = 0;       // the timer of a Delete that waits for its confirmation

  function openKey(id) {
    shownKey = { id: id };
    el.keyID.textContent = id;
    el.keyFields.replaceChildren();
    setKeyMessage('');
    disarmDelete();
    updateActions();
    if (!el.keyPanel.open) el.keyPanel.showModal();
    graphql(KEY_QUERY, 'DashboardKey', { id: id }).then(function (data) {
      if (!shownKey || shownKey.id !== id) return;
      if (!data.key) {
        setKeyMessage('This key no longer exists.');
        shownKey = { id: id, gone: true };
        updateActions();
        return;
      }
      showKey(data.key);
    }, function (err) {
      setKeyMessage('Could not read the key: ' + err.message);
    });
  }

  function showKey(k) {
    shownKey = k;
    var rows = [
      ['State', k.status],
      ['Name', k.name || ''],
      ['Pool', k.pool],
      ['Cooling until', k.coolingUntil ? dateTime(k.coolingUntil) : ''],
      ['Holder', k.lease ? k.lease.holder || '(none named)' : ''],
      ['Leased for', leasedFor(k)],
      ['Lease ends', k.lease ? dateTime(k.lease.expiresAt) : ''],
      ['Fence', k.lease ? String(k.lease.fence) : ''],
      ['Times acquired', numberFormat.format(k.history.timesAcquired)],
      ['Leases run out', numberFormat.format(k.history.leasesExpired) + (keyFlags(k).length ? ' — ' + flagText('expiring') : '')],
      ['Failures', numberFormat.format(k.history.failures) + ' (' + numberFormat.format(k.history.consecutiveFailures) + ' in a row)'],
      ['Last acquired', k.history.lastAcquiredAt ? dateTime(k.history.lastAcquiredAt) : 'never'],
      ['Created', dateTime(k.createdAt)],
      ['Deleted unless kept alive by', dateTime(k.expiresAt)],
    ];
    el.keyFields.replaceChildren.apply(el.keyFields, rows.filter(function (r) { return r[1] !== ''; }).flatMap(function (r) {
      var dt = document.createElement('dt');
      dt.textContent = r[0];
      var dd = document.createElement('dd');
      dd.textContent = r[1];
      dd.dataset.field = r[0];
      return [dt, dd];
    }));
    updateActions();
  }

  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium', hour12: false });

  function dateTime(s) {
    var d = new Date(s);
    return isNaN(d) ? s : dateTimeFormat.format(d);
  }

  function setKeyMessage(text) { el.keyMessage.textContent = text; }

  function updateActions() {
    var known = shownKey && shownKey.status;
    el.keyRelease.disabled = !known || shownKey.status !== 'BLOCKED';
    el.keyRestore.disabled = !known || (shownKey.status !== 'COOLING' && shownKey.status !== 'QUARANTINED');
    el.keyDelete.disabled = !known;
  }

  function disarmDelete() {
    clearTimeout(deleteArmed);
    deleteArmed = 0;
    el.keyDelete.textContent = 'Delete';
  }

  // afterAction reads the list and counts again once an action has changed the pool.
  function afterAction() {
    loadKeys(true);
    requestStats();
    requestPools();
  }

  el.keyRelease.addEventListener('click', function () {
    var id = shownKey.id;
    graphql(RELEASE_MUTATION, 'DashboardRelease', { id: id }).then(function (data) {
      if (shownKey && shownKey.id === id) showKey(data.unblockKey);
      setKeyMessage('Released: the lease is over, and its token no longer works.');
      afterAction();
    }, function (err) {
      setKeyMessage('Could not release: ' + err.message);
    });
  });
  el.keyRestore.addEventListener('click', function () {
    var id = shownKey.id;
    graphql(RESTORE_MUTATION, 'DashboardRestore', { id: id }).then(function (data) {
      if (shownKey && shownKey.id === id) showKey(data.restoreKey);
      setKeyMessage('Restored: the key is handed out again.');
      afterAction();
    }, function (err) {
      setKeyMessage('Could not restore: ' + err.message);
    });
  });
  el.keyDelete.addEventListener('click', function () {
    if (!deleteArmed) { // the first click asks; the second, within 5 s, deletes
      el.keyDelete.textContent = 'Delete for good?';
      deleteArmed = setTimeout(disarmDelete, 5000);
      return;
    }
    disarmDelete();
    var id = shownKey.id;
    graphql(DELETE_MUTATION, 'DashboardDelete', { id: id }).then(function () {
      shownKey = { id: id, gone: true };
      el.keyFields.replaceChildren();
      updateActions();
      setKeyMessage('Deleted.');
      afterAction();
    }, function (err) {
      setKeyMessage('Could not delete: ' + err.message);
    });
  });
  el.keyClose.addEventListener('click', function () { el.keyPanel.close(); });
  el.keyPanel.addEventListener('close', function () { shownKey = null; disarmDelete(); });
  [el.keys, el.feed].forEach(function (list) {
    list.addEventListener('click', function (e) {
      var button = e.target.closest('button[data-id]');
      if (button) openKey(button.dataset.id);
    });
  });

  // ---- the chart -----------------------------------------------------------------
  //
  // One sample of the counts per second, CHART_SECONDS of them, drawn as three
  // lines on a canvas sized to its box in device pixels.

  var samples = []; // {t, total, available, blocked}

  function sample() {
    var now = Date.now();
    if (counts) samples.push({ t: now, total: counts.total, available: counts.available, blocked: counts.blocked });
    while (samples.length && samples[0].t < now - CHART_SECONDS * 1000) samples.shift();
    drawChart(now);
  }

  // loadHistory fills the chart, on load and on a change of pool, with the counts the
  // server sampled (every 10 s) before the page's own samples begin.
  function loadHistory() {
    var asked = pool;
    var since = new Date(Date.now() - CHART_SECONDS * 1000).toISOString();
    graphql(HISTORY_QUERY, 'DashboardHistory', { pool: asked, since: since }).then(function (data) {
      if (asked !== pool) return;
      var past = data.history.map(function (s) {
        return { t: Date.parse(s.at), total: s.total, available: s.available, blocked: s.blocked };
      });
      var first = samples.length ? samples[0].t : Infinity;
      past = past.filter(function (s) { return s.t < first; });
      samples = past.concat(samples);
      el.chart.dataset.historyPoints = String(past.length);
      drawChart(Date.now());
    }, function (err) {
      console.warn('keypool: history query failed:', err);
    });
  }

  // niceStep returns the grid step for four rows up to at least v: 1, 2 or 5
  // times a power of ten, so every label is a round number.
  function niceStep(v) {
    var raw = Math.max(1, v / 4);
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].filter(function (st) { return Number.isInteger(st * p); });
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * p >= raw) return steps[i] * p;
    }
    return 10 * p;
  }

  function drawChart(now) {
    var canvas = el.chart;
    var box = canvas.getBoundingClientRect();
    if (!box.width || !box.height) return;
    var dpr = window.devicePixelRatio || 1;
    var w = Math.round(box.width * dpr), h = Math.round(box.height * dpr);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    var ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, box.width, box.height);

    var style = getComputedStyle(document.documentElement);
    var color = function (name) { return style.getPropertyValue(name).trim(); };
    var font = '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

    var max = 0;
    samples.forEach(function (s) { max = Math.max(max, s.total, s.available, s.blocked); });
    var step = niceStep(max);
    max = step * 4;

    ctx.font = font;
    var left = Math.ceil(ctx.measureText(numberFormat.format(max)).width) + 10;
    var right = 8, top = 8, bottom = 22;
    var pw = box.width - left - right, ph = box.height - top - bottom;
    if (pw <= 0 || ph <= 0) return;
    var t0 = now - CHART_SECONDS * 1000;
    var x = function (t) { return left + (t - t0) / (CHART_SECONDS * 1000) * pw; };
    var y = function (v) { return top + ph - v / max * ph; };

    // Grid and labels.
    ctx.strokeStyle = color('--line');
    ctx.fillStyle = color('--muted');
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (var i = 0; i <= 4; i++) {
      var v = step * i;
      var gy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, gy);
      ctx.lineTo(left + pw, gy);
      ctx.stroke();
      ctx.fillText(numberFormat.format(v), left - 6, gy);
    }
    ctx.textBaseline = 'top';
    ctx.textAlign = 'center';
    // Ticks back from now at a round step, labelled in s or min: at most 6,
    // and at least 64 px apart so that narrow screens stay legible.
    var maxTicks = Math.max(1, Math.min(6, Math.floor(pw / 64)));
    var stepSec = [10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600].filter(function (st) {
      return CHART_SECONDS / st <= maxTicks;
    })[0] || CHART_SECONDS;
    for (var ago = 0; ago <= CHART_SECONDS; ago += stepSec) {
      var tx = x(now - ago * 1000);
      ctx.textAlign = ago === 0 ? 'right' : ago === CHART_SECONDS ? 'left' : 'center';
      ctx.fillText(ago === 0 ? 'now' : '−' + (stepSec < 60 ? ago + ' s' : stepSec < 3600 ? ago / 60 + ' min' : ago / 3600 + ' h'), tx, top + ph + 6);
    }

    if (!samples.length) return;
    [['--total', 'total'], ['--available', 'available'], ['--blocked', 'blocked']].forEach(function (series) {
      ctx.strokeStyle = color(series[0]);
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      ctx.beginPath();
      samples.forEach(function (s, j) {
        var px = x(s.t), py = y(s[series[1]]);
        if (j === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      ctx.stroke();
    });
  }

  setInterval(sample, 1000);
  if (window.ResizeObserver) {
    new ResizeObserver(function () { drawChart(Date.now()); }).observe(el.chart.parentElement);
  }
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', function () { drawChart(Date.now()); });

  setInterval(function () {
    if (socket.state === 'live' && !document.hidden) requestStats();
  }, STATS_REFRESH_MS);
  setInterval(function () {
    if (!socket.offline && !document.hidden) {
      requestPools();
      queryHealth();
    }
  }, POOLS_REFRESH_MS);

  renderPools();
  drawChart(Date.now());
  loadHistory();
  loadKeys(true);
  queryHealth();
  connect();
})();
