// The dashboard's live updates. The server says "changed" over
// /dashboard/live (server-sent events) when the desk changed; the page is
// fetched again and its <main> swapped in place. Without this script the
// page's <noscript> refresh reloads it every 30 seconds instead.
(function () {
  'use strict';
  if (!window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (r) {
        if (r.redirected || !r.ok) {
          // Signed out, or the page failed: let the browser show why.
          window.location.reload();
          return null;
        }
        return r.text();
      })
      .then(function (text) {
        if (text === null) {
          return;
        }
        var next = new DOMParser().parseFromString(text, 'text/html').querySelector('main');
        var main = document.querySelector('main');
        if (next && main) {
          main.replaceWith(document.adoptNode(next));
          document.documentElement.setAttribute('data-live', 'updated');
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }
  var live = new EventSource('/dashboard/live');
  live.addEventListener('ready', function () {
    document.documentElement.setAttribute('data-live', 'on');
  });
  live.addEventListener('changed', refresh);
  live.addEventListener('signed-out', function () {
    live.close();
    window.location.assign('/login');
  });
}());
