// Real GraphQL clients against a running keypool: node clients.mjs SCENARIO URL
// (URL is the server's /graphql). SCENARIO is graphql-ws, apollo, audit, urql,
// graphql-request, subscriptions-transport-ws or graphql-sse. It prints one JSON line
// with what it saw, and exits 1 on the first check that fails. e2e_test.go runs it
// against a server it started (a new one for each scenario, so seqs start at 1).
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ApolloClient, InMemoryCache, HttpLink, split, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { serverAudits } from 'graphql-http';
import { Client as UrqlClient, fetchExchange, subscriptionExchange, gql as urqlGql } from '@urql/core';
import { GraphQLClient, ClientError } from 'graphql-request';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import { createClient as createSSEClient } from 'graphql-sse';

// Browsers have a WebSocket global, which GraphQLWsLink looks at; Node 20 has none.
globalThis.WebSocket ??= WebSocket;

const [scenario, url] = process.argv.slice(2);
const timeoutMs = 10000;

function check(ok, what, detail) {
  if (!ok) {
    console.log(JSON.stringify({ failed: what, detail }));
    process.exit(1);
  }
}

function within(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), timeoutMs)),
  ]);
}

async function post(query, variables) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  return res.json();
}

// A lazy graphql-ws client that reports each socket it opens and closes.
function wsClient() {
  const sockets = { opened: 0, closed: [] };
  let onClosed = () => {};
  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    lazy: true,
    lazyCloseTimeout: 0,
    retryAttempts: 0,
    on: {
      connected: () => { sockets.opened++; },
      closed: (event) => { sockets.closed.push(event.code); onClosed(); },
    },
  });
  const closed = () => new Promise((resolve) => {
    if (sockets.closed.length >= sockets.opened && sockets.opened > 0) return resolve();
    onClosed = resolve;
  });
  return { client, sockets, closed };
}

// Runs one operation on a graphql-ws client and reports how it ended.
function once(client, query, variables) {
  return within(new Promise((resolve) => {
    const seen = [];
    client.subscribe({ query, variables }, {
      next: (value) => seen.push(['next', value]),
      error: (err) => resolve({ seen, end: 'error', err }),
      complete: () => resolve({ seen, end: 'complete' }),
    });
  }), query);
}

function codes(errs) {
  return (Array.isArray(errs) ? errs : errs?.errors ?? [errs]).map((e) => e?.extensions?.code);
}

// The live subscription: every GENERATED event, replayed from the start.
const liveQuery = 'subscription { keyEvents(types: [GENERATED], after: 0) { seq type keyId } }';
const flood = '{' + Array.from({ length: 150 }, (_, i) => ` a${i}: stats { total }`).join('') + ' }';

async function generateKey() {
  const res = await post('mutation { generateKeys(count: 1) { id } }');
  check(!res.errors, 'generateKeys over HTTP', res);
  return res.data.generateKeys[0].id;
}

async function graphqlWs() {
  const { client, sockets, closed } = wsClient();
  const events = [];
  let liveEnd = null;
  let waiter = null;
  const dispose = client.subscribe({ query: liveQuery }, {
    next: (v) => { events.push(v.data.keyEvents.keyId); waiter?.(); },
    error: (e) => { liveEnd = ['error', e]; },
    complete: () => { liveEnd = ['complete']; },
  });
  const delivered = (id) => within(new Promise((resolve) => {
    waiter = () => { if (events.includes(id)) resolve(); };
    waiter();
  }), `event for ${id}`);

  await delivered(await generateKey());

  // Operations that fail before they run end with an error, and only that.
  const refused = {
    validation: ['{ nope }', 'GRAPHQL_VALIDATION_FAILED'],
    parse: ['{ stats {', 'GRAPHQL_PARSE_FAILED'],
    variables: ['query($id: ID!) { key(id: $id) { id } }', 'GRAPHQL_VALIDATION_FAILED'],
    complexity: [flood, 'COMPLEXITY_LIMIT_EXCEEDED'],
  };
  for (const [name, [query, code]] of Object.entries(refused)) {
    const r = await once(client, query);
    check(r.end === 'error' && r.seen.length === 0, `${name} ends with an error alone`, r);
    check(codes(r.err).includes(code), `${name} has code ${code}`, codes(r.err));
  }

  // The live subscription on the same socket goes on.
  await delivered(await generateKey());
  check(liveEnd === null, 'the live subscription was not ended', liveEnd);

  // A query on the socket: one next, then complete.
  const q = await once(client, '{ stats { total } }');
  check(q.end === 'complete' && q.seen.length === 1, 'a query over the socket', q);
  check(sockets.opened === 1, 'one socket for everything', sockets);

  // Done with the last operation: the lazy client closes its socket.
  dispose();
  await within(closed(), 'the lazy client closes its socket');
  check(sockets.closed[0] === 1000, 'closed normally', sockets);
  return { events: events.length, sockets };
}

async function apollo() {
  const { client: ws, sockets, closed } = wsClient();
  const link = split(
    ({ query }) => {
      const def = getMainDefinition(query);
      return def.kind === 'OperationDefinition' && def.operation === 'subscription';
    },
    new GraphQLWsLink(ws),
    new HttpLink({ uri: url }),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });

  // HttpLink: a mutation, a query, a coded field error, a validation error.
  const gen = await client.mutate({ mutation: gql`mutation { generateKeys(count: 2) { id status } }` });
  check(gen.data.generateKeys.length === 2, 'generateKeys over HttpLink', gen);
  const stats = await client.query({ query: gql`{ stats { total available } }`, fetchPolicy: 'no-cache' });
  check(stats.data.stats.total === 2, 'stats over HttpLink', stats);
  const missing = await client.mutate({
    mutation: gql`mutation($id: ID!) { keepAlive(id: $id) { id } }`, variables: { id: 'no-such-key' }, errorPolicy: 'all',
  });
  check(codes(missing.error).includes('NOT_FOUND'), 'NOT_FOUND over HttpLink', missing.error);
  const invalid = await client.query({ query: gql`{ nope }`, fetchPolicy: 'no-cache', errorPolicy: 'all' });
  check(codes(invalid.error).includes('GRAPHQL_VALIDATION_FAILED'), 'a validation error over HttpLink', invalid.error);

  // GraphQLWsLink: a live subscription, and on the same socket one that is refused.
  const events = [];
  let waiter = null;
  let liveEnd = null;
  const live = client.subscribe({ query: gql(liveQuery) }).subscribe({
    next: (r) => {
      if (r.error) { liveEnd = ['error', r.error]; return; }
      events.push(r.data.keyEvents.keyId);
      waiter?.();
    },
    error: (e) => { liveEnd = ['error', e]; },
    complete: () => { liveEnd = ['complete']; },
  });
  const delivered = (id) => within(new Promise((resolve) => {
    waiter = () => { if (events.includes(id)) resolve(); };
    waiter();
  }), `event for ${id}`);
  await delivered(gen.data.generateKeys[1].id);

  const bad = await within(new Promise((resolve) => {
    const seen = [];
    client.subscribe({ query: gql`subscription { keyEvents(types: [NOPE]) { seq } }` }).subscribe({
      next: (r) => { if (r.error) resolve({ seen, end: 'error', err: r.error }); else seen.push(r); },
      error: (err) => resolve({ seen, end: 'error', err }),
      complete: () => resolve({ seen, end: 'complete' }),
    });
  }), 'the refused subscription');
  check(bad.end === 'error' && bad.seen.length === 0, 'a refused subscription ends with its error', bad);
  check(codes(bad.err).includes('GRAPHQL_VALIDATION_FAILED'), 'its code', String(bad.err));

  const more = await client.mutate({ mutation: gql`mutation { generateKeys(count: 1) { id } }` });
  await delivered(more.data.generateKeys[0].id);
  check(liveEnd === null, 'the live subscription goes on', liveEnd);
  check(sockets.opened === 1, 'one socket', sockets);

  live.unsubscribe();
  await within(closed(), 'GraphQLWsLink closes its lazy socket');
  check(sockets.closed[0] === 1000, 'closed normally', sockets);
  return { events: events.length, sockets };
}

async function audit() {
  const results = await Promise.all(serverAudits({ url }).map(({ fn }) => fn()));
  const failed = results.filter((r) => r.status !== 'ok')
    .map(({ id, name, status, reason }) => ({ id, name, status, reason }));
  const must = failed.filter((r) => r.name.startsWith('MUST'));
  const should = failed.filter((r) => r.name.startsWith('SHOULD'));
  check(must.length === 0 && should.length === 0, 'graphql-http audit: no MUST or SHOULD failure', failed);
  return { audits: results.length, passed: results.length - failed.length, notices: failed };
}

// --- The clients of issue 22 ---

// A gauge or counter of the server's /metrics, as a number.
async function metric(name) {
  const text = await (await fetch(new URL('/metrics', url))).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  check(line, `metric ${name}`, text.slice(0, 200));
  return Number(line.split(' ')[1]);
}

// Waits, polling, until cond() holds.
function eventually(cond, what) {
  return within((async () => {
    while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
  })(), what);
}

// events (KeyEvent objects) are GENERATED events with seqs from, from+1, ..., for ids.
function checkEvents(events, from, ids, what) {
  const seqs = events.map((e) => e.seq);
  check(seqs.every((s, i) => s === from + i), `${what}: seqs ${from}.. in order, one apart`, seqs);
  check(events.every((e) => e.type === 'GENERATED'), `${what}: GENERATED events`, events);
  check(JSON.stringify(events.map((e) => e.keyId).sort()) === JSON.stringify([...ids].sort()),
    `${what}: one event per generated key`, { events, ids });
}

async function generateKeys(count) {
  const res = await post('mutation($n: Int!) { generateKeys(count: $n) { id } }', { n: count });
  check(!res.errors, 'generateKeys over HTTP', res);
  return res.data.generateKeys.map((k) => k.id);
}

// A live stream of KeyEvents for a client that calls push(event) for each one.
function eventLog() {
  const events = [];
  let waiter = null;
  return {
    events,
    push(e) { events.push(e); waiter?.(); },
    // resolves once n events have arrived
    count: (n, what) => within(new Promise((resolve) => {
      waiter = () => { if (events.length >= n) resolve(); };
      waiter();
    }), what),
  };
}

const liveEvents = 'subscription { keyEvents(types: [GENERATED], after: 0) { seq type keyId at } }';

// urql: @urql/core's fetchExchange for queries (GET, as urql prefers for them) and
// mutations (POST), and subscriptionExchange forwarding subscriptions to a graphql-ws
// client. Every fetch is recorded, with the content type it was answered in: urql's
// Accept lists text/event-stream beside the JSON types, and keypool answers such a
// POST as a GraphQL-over-SSE stream, which urql reads as well (so both of its parsers
// are exercised: JSON for the GETs, event-stream for the POSTs).
async function urql() {
  const requests = [];
  const recordingFetch = async (input, init) => {
    const res = await fetch(input, init);
    requests.push({ method: init?.method ?? 'GET', status: res.status, type: res.headers.get('content-type') });
    return res;
  };
  const { client: ws, sockets, closed } = wsClient();
  const client = new UrqlClient({
    url,
    fetch: recordingFetch,
    requestPolicy: 'network-only',
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return { subscribe: (sink) => ({ unsubscribe: ws.subscribe(input, sink) }) };
        },
      }),
    ],
  });

  // A live subscription before any key exists.
  const log = eventLog();
  let liveError = null;
  const live = client.subscription(urqlGql(liveEvents), {}).subscribe((r) => {
    if (r.error) { liveError = r.error; return; }
    log.push(r.data.keyEvents);
  });
  await eventually(async () => sockets.opened === 1 && await metric('keypool_subscribers') === 1, 'the urql subscription is live');

  // A mutation with variables (POST), its events on the subscription.
  const gen = await client.mutation(urqlGql`mutation($n: Int!) { generateKeys(count: $n) { id status } }`, { n: 3 }).toPromise();
  check(!gen.error && gen.data.generateKeys.length === 3, 'generateKeys through urql', gen.error ?? gen.data);
  const ids = gen.data.generateKeys.map((k) => k.id);
  await log.count(3, 'three GENERATED events through urql');

  // Queries (GET): stats, and a key.
  const stats = await client.query(urqlGql`{ stats { total available blocked } }`, {}).toPromise();
  check(!stats.error && stats.data.stats.total === 3 && stats.data.stats.available === 3, 'stats through urql', stats.error ?? stats.data);
  const lease = await client.mutation(urqlGql`mutation($ttl: Duration) { acquireKey(ttl: $ttl) { token fence key { id status } } }`, { ttl: '30s' }).toPromise();
  check(!lease.error && lease.data.acquireKey.key.status === 'BLOCKED', 'acquireKey through urql', lease.error ?? lease.data);
  const key = await client.query(urqlGql`query($id: ID!) { key(id: $id) { id status lease { fence } } }`, { id: lease.data.acquireKey.key.id }).toPromise();
  check(!key.error && key.data.key.status === 'BLOCKED' && key.data.key.lease.fence === lease.data.acquireKey.fence, 'the key, read back through urql', key.error ?? key.data);

  // Errors: a coded field error on a mutation, a validation error on a query.
  const missing = await client.mutation(urqlGql`mutation($id: ID!) { keepAlive(id: $id) { id } }`, { id: 'no-such-key' }).toPromise();
  check(codes(missing.error?.graphQLErrors).includes('NOT_FOUND'), 'NOT_FOUND through urql', missing.error);
  const invalid = await client.query(urqlGql`{ nope }`, {}).toPromise();
  check(codes(invalid.error?.graphQLErrors).includes('GRAPHQL_VALIDATION_FAILED'), 'a validation error through urql', invalid.error);

  check(liveError === null, 'the urql subscription had no error', liveError);
  checkEvents(log.events, 1, ids, 'urql subscription');
  check(requests.filter((r) => r.method === 'GET').length === 3, 'urql sent its three queries with GET', requests);
  check(requests.filter((r) => r.method === 'POST').length === 3, 'and its three mutations with POST', requests);

  live.unsubscribe();
  await within(closed(), 'the lazy graphql-ws client under urql closes its socket');
  check(sockets.closed[0] === 1000, 'closed normally', sockets);
  await eventually(async () => await metric('keypool_subscribers') === 0, 'the server ends the urql subscription');
  return { events: log.events.length, requests, sockets };
}

// graphql-request: GraphQLClient with GET for queries and POST for mutations, variables,
// and errors as ClientError with their codes (and, with errorPolicy all, beside data).
async function graphqlRequest() {
  const client = new GraphQLClient(url, { method: 'GET' });
  const acquire = 'mutation($ttl: Duration) { acquireKey(ttl: $ttl) { token fence key { id status } } }';

  async function refused(doc, variables, code, what) {
    try {
      await client.request(doc, variables);
    } catch (err) {
      check(err instanceof ClientError, `${what}: a ClientError`, String(err));
      check(codes(err.response.errors).includes(code), `${what}: code ${code}`, err.response);
      return err.response;
    }
    check(false, `${what}: refused`, null);
  }

  // An empty pool: acquireKey answers null with NOT_FOUND.
  const empty = await refused(acquire, { ttl: '30s' }, 'NOT_FOUND', 'acquireKey on an empty pool');
  check(empty.status === 200 && empty.data?.acquireKey === null, 'NOT_FOUND is a field error: 200, data.acquireKey null', empty);
  const raw = await client.rawRequest({ query: acquire, variables: { ttl: '30s' }, errorPolicy: 'all' })
    .catch((err) => err);
  const rawCodes = raw instanceof ClientError ? codes(raw.response.errors) : codes(raw.errors);
  check(rawCodes.includes('NOT_FOUND'), 'rawRequest sees NOT_FOUND too', raw instanceof ClientError ? raw.response : raw);

  // A query over GET, a mutation with variables over POST.
  const before = await client.request('{ stats { total } }');
  check(before.stats.total === 0, 'stats over GET', before);
  const gen = await client.request('mutation($n: Int!) { generateKeys(count: $n) { id status } }', { n: 2 });
  check(gen.generateKeys.length === 2 && gen.generateKeys.every((k) => k.status === 'AVAILABLE'), 'generateKeys with variables', gen);

  // Two leases, fences growing; a third acquire finds none.
  const a = (await client.request(acquire, { ttl: '30s' })).acquireKey;
  const b = (await client.request(acquire, { ttl: '30s' })).acquireKey;
  check(a.fence < b.fence && a.key.id !== b.key.id, 'two leases of two keys, fences growing', { a, b });
  await refused(acquire, { ttl: '30s' }, 'NOT_FOUND', 'acquireKey on a pool whose keys are leased');

  // unblockKey with variables: the right token frees the key, a wrong one is LEASE_MISMATCH.
  const freed = await client.request('mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id status } }', { id: a.key.id, token: a.token });
  check(freed.unblockKey.status === 'AVAILABLE', 'unblockKey with its token', freed);
  await refused('mutation($id: ID!, $token: ID) { unblockKey(id: $id, token: $token) { id } }', { id: b.key.id, token: a.token },
    'LEASE_MISMATCH', "unblockKey with another lease's token");
  await refused('mutation($id: ID!) { unblockKey(id: $id) { id } }', { id: a.key.id }, 'NOT_BLOCKED', 'unblockKey of a free key');
  const bad = await refused('mutation($ttl: Duration) { acquireKey(ttl: $ttl) { token } }', { ttl: '0s' }, 'BAD_USER_INPUT', 'a ttl of 0s');

  // Refused before it runs: a 4xx with the code in the body.
  const invalid = await refused('{ nope }', undefined, 'GRAPHQL_VALIDATION_FAILED', 'a validation error');
  check(invalid.status === 400, 'a validation error over GET is a 400', invalid.status);
  const after = await client.request('{ stats { total available blocked } }');
  check(after.stats.total === 2 && after.stats.available === 1 && after.stats.blocked === 1, 'stats at the end', after);
  return { leases: [a.fence, b.fence], badTTLStatus: bad.status, validationStatus: invalid.status };
}

// subscriptions-transport-ws's SubscriptionClient on the legacy graphql-ws subprotocol,
// over a ws socket that records every frame both ways.
async function subscriptionsTransportWs() {
  const frames = []; // [direction, message]
  const closes = [];
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => frames.push(['in', JSON.parse(e.data)]));
      this.addEventListener('close', (e) => closes.push(e.code));
    }

    send(data) {
      frames.push(['out', JSON.parse(data)]);
      super.send(data);
    }
  }
  const client = new SubscriptionClient(url.replace(/^http/, 'ws'), { reconnect: false, lazy: true }, RecordingWebSocket);
  let connected = 0;
  client.onConnected(() => { connected++; });
  const protocols = [];
  const opId = () => frames.filter(([d, m]) => d === 'out' && m.type === 'start').at(-1)[1].id;
  const of = (id) => frames.filter(([, m]) => m.id === id).map(([d, m]) => `${d}:${m.type}`);

  // The live subscription.
  const log = eventLog();
  let liveEnd = null;
  const live = client.request({ query: liveEvents }).subscribe({
    next: (r) => { if (r.errors) liveEnd = ['errors', r.errors]; else log.push(r.data.keyEvents); },
    error: (e) => { liveEnd = ['error', e]; },
    complete: () => { liveEnd = ['complete']; },
  });
  await eventually(() => connected === 1 && frames.some(([d, m]) => d === 'out' && m.type === 'start'), 'connection_ack, then start sent');
  const liveId = opId();
  protocols.push(client.client.protocol);
  check(protocols[0] === 'graphql-ws', 'the legacy subprotocol was chosen', protocols);
  await eventually(async () => await metric('keypool_subscribers') === 1, 'the legacy subscription is live');

  const first = await generateKeys(2);
  await log.count(2, 'two GENERATED events on the legacy socket');

  // Operations refused before they run: one error each, nothing after it.
  const refuse = (query) => within(new Promise((resolve) => {
    const seen = [];
    client.request({ query }).subscribe({
      next: (r) => seen.push(r),
      error: (err) => resolve({ seen, end: 'error', err, id: opId() }),
      complete: () => resolve({ seen, end: 'complete', id: opId() }),
    });
  }), query);
  const refused = [
    ['{ nope }', 'GRAPHQL_VALIDATION_FAILED'],
    ['subscription { keyEvents(types: [NOPE]) { seq } }', 'GRAPHQL_VALIDATION_FAILED'],
    ['{ stats {', 'GRAPHQL_PARSE_FAILED'],
  ];
  const refusedIds = [];
  for (const [query, code] of refused) {
    const r = await refuse(query);
    check(r.end === 'error' && r.seen.length === 0, `${query}: an error alone`, r);
    check(r.err?.extensions?.code === code, `${query}: code ${code}`, r.err);
    refusedIds.push(r.id);
  }

  // The live subscription goes on; by the time its next event arrives, anything the
  // server sent for the refused operations has arrived too (one socket, in order).
  const more = await generateKeys(1);
  await log.count(3, 'a third GENERATED event after the refusals');
  for (const id of refusedIds) {
    check(JSON.stringify(of(id)) === JSON.stringify(['out:start', 'in:error']), `operation ${id}: start, error, and nothing after`, of(id));
  }

  // A query on the socket: data, then complete.
  const q = await within(new Promise((resolve) => {
    const seen = [];
    client.request({ query: '{ stats { total } }' }).subscribe({
      next: (r) => seen.push(r),
      error: (err) => resolve({ seen, end: 'error', err }),
      complete: () => resolve({ seen, end: 'complete' }),
    });
  }), 'a query on the legacy socket');
  check(q.end === 'complete' && q.seen.length === 1 && q.seen[0].data.stats.total === 3, 'a query: one data, then complete', q);
  const queryId = opId();
  check(JSON.stringify(of(queryId)) === JSON.stringify(['out:start', 'in:data', 'in:complete']), 'the query on the wire', of(queryId));

  // Stopping the live subscription: the server ends it and sends nothing more for it.
  check(liveEnd === null, 'the live subscription was not ended', liveEnd);
  live.unsubscribe();
  await eventually(async () => await metric('keypool_subscribers') === 0, 'the server ends the stopped subscription');
  const afterStop = await within(new Promise((resolve) => {
    client.request({ query: '{ stats { available } }' }).subscribe({ complete: resolve, error: resolve });
  }), 'a query after the stop');
  check(afterStop === undefined, 'the query after the stop completes', afterStop);
  const liveFrames = of(liveId);
  check(liveFrames.at(-1) === 'out:stop' && liveFrames.filter((f) => f === 'in:data').length === 3,
    'the live subscription: three data, then stop, and nothing after it', liveFrames);
  checkEvents(log.events, 1, [...first, ...more], 'legacy subscription');
  check(frames.some(([d, m]) => d === 'in' && m.type === 'ka'), 'keep-alive messages (ka)', null);
  check(liveEnd === null, 'no complete or error for the stopped subscription', liveEnd);

  // close() sends connection_terminate and closes the socket.
  const socket = client.client;
  client.close();
  await eventually(() => closes.length === 1, 'the legacy socket closes');
  check(frames.some(([d, m]) => d === 'out' && m.type === 'connection_terminate'), 'connection_terminate sent', null);
  check(socket.readyState === WebSocket.CLOSED, 'the socket is closed', socket.readyState);
  return {
    events: log.events.map((e) => e.seq),
    refused: refusedIds.map((id) => of(id)),
    query: of(queryId),
    live: liveFrames.length,
    close: closes[0],
  };
}

// graphql-sse's client in distinct connections mode: one POST with Accept:
// text/event-stream per operation, "next" events, then "complete".
async function graphqlSSE() {
  const client = createSSEClient({ url, singleConnection: false, retryAttempts: 0 });

  // Runs one operation and reports its results, the SSE events seen, and how it ended.
  const once = (query, variables) => within(new Promise((resolve) => {
    const seen = [];
    const messages = [];
    client.subscribe({ query, variables }, {
      next: (r) => seen.push(r),
      error: (err) => resolve({ seen, messages, end: 'error', err: String(err) }),
      complete: () => resolve({ seen, messages, end: 'complete' }),
    }, { message: (m) => messages.push(m.event) });
  }), query);

  // The live subscription.
  const log = eventLog();
  let liveEnd = null;
  const liveMessages = [];
  let connected = false;
  const dispose = client.subscribe({ query: liveEvents }, {
    next: (r) => { if (r.errors) liveEnd = ['errors', r.errors]; else log.push(r.data.keyEvents); },
    error: (err) => { liveEnd = ['error', String(err)]; },
    complete: () => { liveEnd = ['complete']; },
  }, { connected: () => { connected = true; }, message: (m) => liveMessages.push(m.event) });
  await eventually(async () => connected && await metric('keypool_subscribers') === 1, 'the SSE subscription is live');

  const first = await generateKeys(2);
  await log.count(2, 'two GENERATED events over SSE');

  // A mutation and a query through the client, each its own stream: next, complete.
  const gen = await once('mutation($n: Int!) { generateKeys(count: $n) { id } }', { n: 1 });
  check(gen.end === 'complete' && gen.seen.length === 1 && !gen.seen[0].errors, 'a mutation over SSE', gen);
  await log.count(3, 'its GENERATED event');
  const q = await once('{ stats { total available } }');
  check(q.end === 'complete' && q.seen.length === 1 && q.seen[0].data.stats.total === 3, 'a query over SSE: one result, then complete', q);
  check(JSON.stringify(q.messages) === JSON.stringify(['next', 'complete']), "the query's events: next, complete", q.messages);

  // Refused before it runs: the error as the one result, then complete.
  const invalid = await once('{ nope }');
  check(invalid.end === 'complete' && invalid.seen.length === 1 && codes(invalid.seen[0].errors).includes('GRAPHQL_VALIDATION_FAILED'),
    'a validation error over SSE', invalid);
  const missing = await once('mutation($id: ID!) { keepAlive(id: $id) { id } }', { id: 'no-such-key' });
  check(missing.end === 'complete' && codes(missing.seen[0]?.errors).includes('NOT_FOUND'), 'NOT_FOUND over SSE', missing);

  // Disposing the live subscription completes it (no error), and the server lets it go.
  check(liveEnd === null, 'the live SSE subscription goes on', liveEnd);
  dispose();
  await eventually(() => liveEnd !== null, 'the disposed subscription ends');
  check(liveEnd[0] === 'complete', 'the disposed subscription completes cleanly', liveEnd);
  await eventually(async () => await metric('keypool_subscribers') === 0, 'the server ends the disposed SSE stream');
  checkEvents(log.events, 1, [...first, gen.seen[0].data.generateKeys[0].id], 'SSE subscription');
  check(liveMessages.every((m) => m === 'next') && liveMessages.length === 3, 'the live stream: next events only', liveMessages);

  client.dispose();
  return { events: log.events.map((e) => e.seq), query: q.messages, invalid: invalid.messages };
}

const scenarios = {
  'graphql-ws': graphqlWs,
  apollo,
  audit,
  urql,
  'graphql-request': graphqlRequest,
  'subscriptions-transport-ws': subscriptionsTransportWs,
  'graphql-sse': graphqlSSE,
};
try {
  check(scenarios[scenario], 'a known scenario', scenario);
  const summary = await scenarios[scenario]();
  console.log(JSON.stringify({ ok: scenario, ...summary }));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ failed: scenario, detail: String(err?.stack ?? err) }));
  process.exit(1);
}
