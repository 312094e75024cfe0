// Conveniences only: the page works without this script.
(function () {
  "use strict";
  var filters = document.getElementById("filters");
  var date = document.getElementById("date");
  if (filters && date) {
    // A new date shows its list at once.
    date.addEventListener("change", function () { filters.submit(); });
  }
  var search = document.getElementById("q");
  function filterRows() {
    var wanted = (search.value || "").toLowerCase();
    document.querySelectorAll("table.worklist tbody tr").forEach(function (row) {
      row.hidden = wanted !== "" && row.textContent.toLowerCase().indexOf(wanted) < 0;
    });
  }
  if (search) { search.addEventListener("input", filterRows); }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.classList && form.classList.contains("cancel") &&
        !window.confirm("Cancel this item? It stays in the list as DISCONTINUED.")) {
      event.preventDefault();
    }
  });
  // Refresh the lists every 30 s unless someone is typing in a form.
  setInterval(function () {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "SELECT")) { return; }
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("lists");
        var lists = document.getElementById("lists");
        if (fresh && lists) { lists.replaceWith(fresh); if (search) { filterRows(); } }
      })
      .catch(function () { /* offline for a moment: keep what is shown */ });
  }, 30000);
})();
