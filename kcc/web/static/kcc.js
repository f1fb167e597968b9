// The little script of the screens; every form works without it. It keeps the werkvoorraad current without a
// reload, and stops a second click on a button that decides (the server refuses a second decision anyway).
(function () {
  "use strict";

  function refreshList() {
    var list = document.getElementById("werkvoorraad-lijst");
    if (!list) { return; }
    var seconds = parseFloat(list.getAttribute("data-refresh") || "0");
    var source = list.getAttribute("data-src");
    var news = document.getElementById("werkvoorraad-nieuw");
    if (!(seconds > 0) || !source) { return; }
    window.setInterval(function () {
      if (document.hidden) { return; }
      fetch(source, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var before = list.querySelector("[data-total]");
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var after = holder.querySelector("[data-total]");
          var was = before ? parseInt(before.getAttribute("data-total"), 10) : 0;
          var now = after ? parseInt(after.getAttribute("data-total"), 10) : 0;
          if (holder.innerHTML !== list.innerHTML) {
            var focused = document.activeElement && list.contains(document.activeElement);
            if (!focused) { list.innerHTML = holder.innerHTML; }
            if (news && now > was) { news.textContent = (now - was) + " nieuwe mail(s) in de werkvoorraad."; }
          }
        })
        .catch(function () { /* the next round tries again */ });
    }, seconds * 1000);
  }

  function onceOnly() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var button = event.submitter;
      if (form.getAttribute("data-sent") === "1" && button && button.hasAttribute("data-once")) {
        event.preventDefault();
        return;
      }
      if (button && button.hasAttribute("data-once")) {
        form.setAttribute("data-sent", "1");
        window.setTimeout(function () { button.setAttribute("disabled", "disabled"); }, 0);
      }
    });
  }

  refreshList();
  onceOnly();
})();
