// The conversation viewer: a paged, searchable list; each conversation's script is loaded
// beside the page when it is opened (pages opened from file:// may not fetch files).
(function () {
  "use strict";
  var PAGE = 50;
  var index = JSON.parse(document.getElementById("gd-index").textContent);
  var loaded = {};
  var waiting = {};
  var state = { page: 0, matches: index, open: null };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  window.GD = {
    receive: function (n, data) {
      loaded[n] = data;
      (waiting[n] || []).forEach(function (done) { done(data); });
      delete waiting[n];
    },
  };

  function load(n, done) {
    if (loaded[n]) return done(loaded[n]);
    if (waiting[n]) return waiting[n].push(done);
    waiting[n] = [done];
    var script = document.createElement("script");
    script.src = "conversations/c" + n + ".js";
    script.onerror = function () {
      document.getElementById("conversation").textContent =
        "Could not load conversations/c" + n + ".js beside this page.";
    };
    document.head.appendChild(script);
  }

  function entryText(entry) {
    return [entry.key, entry.id, entry.scenario, entry.preview].join(" ").toLowerCase();
  }

  function filter(query) {
    var words = query.toLowerCase().split(/\s+/).filter(Boolean);
    state.matches = index.filter(function (entry) {
      var text = entryText(entry);
      return words.every(function (word) { return text.indexOf(word) >= 0; });
    });
    state.page = 0;
    renderList();
  }

  function renderList() {
    var list = document.getElementById("list");
    list.textContent = "";
    var start = state.page * PAGE;
    state.matches.slice(start, start + PAGE).forEach(function (entry) {
      var row = el("div", "entry" + (entry.n === state.open ? " open" : ""));
      row.dataset.n = entry.n;
      row.appendChild(el("div", "title", entry.key));
      var meta = el("div", "meta", entry.scenario + " · " + entry.rounds + " rounds");
      if (entry.coverage !== null) meta.textContent += " · coverage " + entry.coverage;
      if (entry.degenerate) meta.appendChild(el("span", "badge warn", "degenerate"));
      if (entry.duplicate) meta.appendChild(el("span", "badge warn", "near-duplicate"));
      row.appendChild(meta);
      row.addEventListener("click", function () { show(entry.n, null); });
      list.appendChild(row);
    });
    var pages = Math.max(1, Math.ceil(state.matches.length / PAGE));
    document.getElementById("page-info").textContent =
      "page " + (state.page + 1) + " of " + pages + " · " + state.matches.length + " of " +
      index.length + " conversations";
  }

  function citeLink(turn) {
    var link = el("a", "cite", turn);
    link.dataset.turn = turn;
    link.href = "#c=" + state.open + "&t=" + turn;
    return link;
  }

  function renderTurns(data) {
    var box = el("div");
    box.id = "turns";
    var switches = {};
    data.switches.forEach(function (s) { switches[s.turn] = s; });
    data.turns.forEach(function (turn, i) {
      if (switches[i]) {
        box.appendChild(el("div", "switch",
          "Topic switch: " + switches[i].reason + " → " + switches[i].to_topic));
      }
      var node = el("div", "turn " + turn.role);
      node.id = "turn-" + i;
      var head = el("div", "head", "#" + i + " " + turn.role);
      if (turn.clean !== undefined) head.appendChild(el("span", "badge", "noised"));
      if (turn.repeating) head.appendChild(el("span", "badge warn", "round repeats an earlier one"));
      if (turn.role_break !== undefined) {
        head.appendChild(el("span", "badge", "regenerated after a role break: " + turn.role_break));
      }
      node.appendChild(head);
      node.appendChild(el("div", "text", turn.text));
      if (turn.clean !== undefined) {
        var noise = el("div", "noise");
        noise.appendChild(el("div", null, "Edits: " + turn.edits.join("; ")));
        noise.appendChild(el("div", null, "Clean text: " + turn.clean));
        node.appendChild(noise);
      }
      box.appendChild(node);
    });
    return box;
  }

  function renderNotes(data) {
    var box = el("div");
    box.id = "notes";
    if (!data.has_distilled) {
      box.appendChild(el("p", "explain", "No distilled file for this conversation."));
      return box;
    }
    box.appendChild(el("h3", null, "Final summary"));
    box.appendChild(el("div", "summary", data.summary || "(empty)"));
    box.appendChild(el("h3", null, "Chunk notes"));
    data.chunks.forEach(function (chunk) {
      var node = el("div", "chunk");
      var range = chunk.range ? " · turns " + chunk.range[0] + "–" + chunk.range[1] : "";
      node.appendChild(el("div", "head", "Chunk " + chunk.index + range + " · " + chunk.status));
      if (chunk.topic) node.appendChild(el("div", null, chunk.topic));
      chunk.items.forEach(function (item) {
        var line = el("div", "item" + (item.cited ? " filled" : ""));
        line.appendChild(el("span", "section", item.section.replace(/_/g, " ") + ": "));
        line.appendChild(el("span", null, item.text));
        item.turns.forEach(function (turn) { line.appendChild(citeLink(turn)); });
        if (item.cited) line.appendChild(el("span", "badge", "citation " + item.cited + " by the distiller"));
        node.appendChild(line);
      });
      if (chunk.status === "raw") node.appendChild(el("div", "summary", chunk.raw));
      box.appendChild(node);
    });
    return box;
  }

  function show(n, turn) {
    state.open = n;
    renderList();
    load(n, function (data) {
      var main = document.getElementById("conversation");
      main.textContent = "";
      main.appendChild(el("h3", null, data.key));
      main.appendChild(el("div", "explain",
        data.scenario + " · id " + data.id + " · " + data.turns.length + " turns" +
        (data.termination ? " · ended: " + data.termination : "") + " · " + data.source));
      var columns = el("div", "columns");
      columns.appendChild(renderTurns(data));
      columns.appendChild(renderNotes(data));
      main.appendChild(columns);
      if (turn !== null) goToTurn(turn);
    });
  }

  function goToTurn(turn) {
    var previous = document.querySelector(".turn.target");
    if (previous) previous.classList.remove("target");
    var node = document.getElementById("turn-" + turn);
    if (!node) return;
    node.classList.add("target");
    node.scrollIntoView({ block: "center" });
  }

  function fromHash() {
    var match = /c=(\d+)(?:&t=(\d+))?/.exec(location.hash);
    if (!match) return;
    var n = Number(match[1]);
    var turn = match[2] === undefined ? null : Number(match[2]);
    if (n === state.open && turn !== null && loaded[n]) goToTurn(turn);
    else show(n, turn);
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.cite") : null;
    if (!link) return;
    event.preventDefault();
    history.replaceState(null, "", link.getAttribute("href"));
    goToTurn(Number(link.dataset.turn));
  });
  document.getElementById("search").addEventListener("input", function (event) {
    filter(event.target.value);
  });
  document.getElementById("prev").addEventListener("click", function () {
    if (state.page > 0) { state.page -= 1; renderList(); }
  });
  document.getElementById("next").addEventListener("click", function () {
    if ((state.page + 1) * PAGE < state.matches.length) { state.page += 1; renderList(); }
  });
  window.addEventListener("hashchange", fromHash);
  renderList();
  fromHash();
})();
