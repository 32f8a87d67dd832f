// statesaga console: keep a page up to date while what it shows is running.
// The element #live carries data-poll while its saga (or a saga it lists) is not
// finished; every two seconds the page is fetched again and #live replaced by the
// new one, until the server renders it without data-poll. No framework, no build.
(function () {
  "use strict";
  const PERIOD = 2000;
  function tick() {
    const live = document.getElementById("live");
    if (!live || !live.hasAttribute("data-poll")) return;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Statesaga-Poll": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text !== null) {
          const fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
          if (fresh) live.replaceWith(document.adoptNode(fresh));
        }
      })
      .catch(function () { /* the server is away: try again later */ })
      .finally(function () { setTimeout(tick, PERIOD); });
  }
  setTimeout(tick, PERIOD);
})();
