// Starts GraphiQL on the keypool API. Loaded after the vendored React, ReactDOM
// and GraphiQL UMD bundles, which define the globals used here.
(function () {
  'use strict';

  var root = document.getElementById('graphiql');
  var path = root.getAttribute('data-endpoint') || '/graphql';
  var wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';

  // The UMD bundle carries @graphiql/toolkit's fetcher with the graphql-ws
  // client built in: subscriptions go over graphql-transport-ws to the same
  // endpoint, everything else is a POST.
  // With access control on, the tab's token (token.js) goes as a header, and in
  // connection_init's payload: one fetcher per token, made when first needed.
  var fetchers = {};
  function baseFetcher(params, opts) {
    var sent = keypoolToken.authorization();
    if (!fetchers[sent]) {
      fetchers[sent] = GraphiQL.createFetcher({
        url: location.origin + path,
        subscriptionUrl: wsScheme + '//' + location.host + path,
        headers: sent ? { Authorization: sent } : undefined,
        wsConnectionParams: sent ? { Authorization: sent } : undefined,
      });
    }
    var result = fetchers[sent](params, opts);
    if (!result || typeof result.then !== 'function') return result; // a subscription
    // Answered UNAUTHENTICATED (a 401): ask for a token, and send it once more.
    return result.then(function (body) {
      var code = body && body.errors && body.errors[0] && body.errors[0].extensions && body.errors[0].extensions.code;
      if (code === 'UNAUTHENTICATED' && !(opts && opts.keypoolRetried) && keypoolToken.retryAfter(sent)) {
        return baseFetcher(params, Object.assign({}, opts, { keypoolRetried: true }));
      }
      return body;
    });
  }

  // The fetcher takes the WebSocket only when operationName names a
  // subscription of the document. GraphiQL fills operationName in a moment after
  // an edit or a tab switch, so a quick run of a subscription could go out as a
  // POST with the old tab's name. For a document of one operation, name it
  // from the text that is actually sent.
  function fetcher(params, opts) {
    try {
      var doc = GraphiQL.GraphQL.parse(params.query);
      var ops = doc.definitions.filter(function (d) { return d.kind === 'OperationDefinition'; });
      if (ops.length === 1) {
        params = Object.assign({}, params, { operationName: ops[0].name ? ops[0].name.value : undefined });
        opts = Object.assign({}, opts, { documentAST: doc });
      }
    } catch (err) {
      // Not valid GraphQL: send it as it is and let the server explain.
    }
    return baseFetcher(params, opts);
  }

  function tab(query, variables) {
    return { query: query, variables: variables ? JSON.stringify(variables, null, 2) : undefined };
  }

  var someKey = 'paste a key id from generateKeys';
  var someToken = 'paste the lease token from acquireKey';

  // One tab per operation of the schema, in the order a client meets them.
  var tabs = [
    tab(
      '# Creates new AVAILABLE keys.\n' +
      'mutation GenerateKeys($count: Int!) {\n' +
      '  generateKeys(count: $count) {\n' +
      '    id\n    status\n    createdAt\n    expiresAt\n' +
      '  }\n}\n',
      { count: 3 }),
    tab(
      '# Leases a random AVAILABLE key; null\n' +
      '# (NOT_FOUND) when none is free. ttl and\n' +
      '# wait are optional.\n' +
      'mutation AcquireKey($ttl: Duration) {\n' +
      '  acquireKey(ttl: $ttl) {\n' +
      '    token\n    fence\n    acquiredAt\n    expiresAt\n' +
      '    key {\n      id\n      status\n    }\n' +
      '  }\n}\n',
      { ttl: '30s' }),
    tab(
      '# Returns a BLOCKED key to the pool. With\n' +
      '# a token, only that lease may end.\n' +
      'mutation UnblockKey($id: ID!, $token: ID) {\n' +
      '  unblockKey(id: $id, token: $token) {\n' +
      '    id\n    status\n' +
      '  }\n}\n',
      { id: someKey, token: someToken }),
    tab(
      '# Extends the lease that token names.\n' +
      'mutation RenewLease($id: ID!, $token: ID!, $ttl: Duration) {\n' +
      '  renewLease(id: $id, token: $token, ttl: $ttl) {\n' +
      '    token\n    fence\n    expiresAt\n' +
      '  }\n}\n',
      { id: someKey, token: someToken, ttl: '60s' }),
    tab(
      '# Moves the keep-alive deadline: a key\n' +
      '# not kept alive is deleted for good.\n' +
      'mutation KeepAlive($id: ID!) {\n' +
      '  keepAlive(id: $id) {\n' +
      '    id\n    expiresAt\n' +
      '  }\n}\n',
      { id: someKey }),
    tab(
      '# Deletes a key for good.\n' +
      'mutation DeleteKey($id: ID!) {\n' +
      '  deleteKey(id: $id)\n' +
      '}\n',
      { id: someKey }),
    tab(
      '# A key, its lease and its history;\n' +
      '# null if unknown.\n' +
      'query Key($id: ID!) {\n' +
      '  key(id: $id) {\n' +
      '    id\n    status\n    createdAt\n    expiresAt\n' +
      '    lease {\n      token\n      fence\n      acquiredAt\n      expiresAt\n    }\n' +
      '    history {\n      timesAcquired\n      leasesExpired\n      lastAcquiredAt\n    }\n' +
      '  }\n}\n',
      { id: someKey }),
    tab(
      '# How many keys the pool holds.\n' +
      'query Stats {\n' +
      '  stats {\n' +
      '    total\n    available\n    blocked\n' +
      '  }\n}\n'),
    tab(
      '# Live key events over WebSocket. Filter\n' +
      '# with types; resume with after: a seq.\n' +
      'subscription KeyEvents($types: [KeyEventType!], $after: Int) {\n' +
      '  keyEvents(types: $types, after: $after) {\n' +
      '    seq\n    type\n    keyId\n    at\n' +
      '  }\n}\n',
      { types: null, after: null }),
  ];

  var h = React.createElement;
  var logo = h(GraphiQL.Logo, null,
    h('a', { className: 'kp-logo', href: '/dashboard', title: 'Open the live dashboard' },
      'keypool', h('span', { className: 'kp-logo-link' }, 'dashboard →')));

  // GraphiQL 3 fills the editors of the first default tab with its query but
  // not its variables; give those explicitly on a first visit only, as later
  // visits restore the tabs GraphiQL saved.
  var firstVisit = true;
  try {
    firstVisit = !localStorage.getItem('graphiql:tabState');
  } catch (err) {
    // Storage may be off; GraphiQL then starts from defaultTabs every time.
  }

  ReactDOM.createRoot(root).render(
    h(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: tabs,
      variables: firstVisit ? tabs[0].variables : undefined,
      defaultEditorToolsVisibility: 'variables',
      isHeadersEditorEnabled: true,
    }, logo));
})();
