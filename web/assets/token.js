// The token a page sends when the server has access control on (-auth-file).
// Asked for only once the server answers 401 (or closes a websocket with 4403),
// and kept in sessionStorage: for this tab only, gone when it closes; never in a
// URL, never in localStorage.
(function () {
  'use strict';

  var KEY = 'keypool-token';

  function read() {
    try { return sessionStorage.getItem(KEY) || ''; } catch (err) { return ''; }
  }

  window.keypoolToken = {
    // authorization is the Authorization header's value, or '' without a token.
    authorization: function () {
      var token = read();
      return token ? 'Bearer ' + token : '';
    },
    // ask prompts for a token (saying why) and keeps it; false if none was given.
    ask: function (why) {
      var token = window.prompt((why || 'This keypool server needs a token.') +
        '\nPaste your token (kept for this tab only):', '');
      token = token ? token.trim() : '';
      try {
        if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY);
      } catch (err) {
        return false;
      }
      return token !== '';
    },
    // retryAfter decides, after the server refused a request sent with the
    // authorization sent ('' for none), whether to send it again: yes if the
    // token changed since (another request asked), else if one is given now.
    retryAfter: function (sent) {
      if (window.keypoolToken.authorization() !== sent) return true;
      return window.keypoolToken.ask(sent ? 'The server refused this token.' : '');
    },
  };
})();
