// Real GraphQL clients against a running keypool: node clients.mjs SCENARIO URL
// (URL is the server's /graphql). SCENARIO is graphql-ws, apollo or audit. It prints
// one JSON line with what it saw, and exits 1 on the first check that fails.
// e2e_test.go runs it against a server it started.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ApolloClient, InMemoryCache, HttpLink, split, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { serverAudits } from 'graphql-http';

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

const scenarios = { 'graphql-ws': graphqlWs, apollo, audit };
try {
  check(scenarios[scenario], 'a known scenario', scenario);
  const summary = await scenarios[scenario]();
  console.log(JSON.stringify({ ok: scenario, ...summary }));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ failed: scenario, detail: String(err?.stack ?? err) }));
  process.exit(1);
}
