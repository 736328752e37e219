/* headscope attention viewer: draws one head's strongest links for a clicked word, from the data block that
   headscope.reports.viewer writes next to it. No network, no eval, no innerHTML: every text from the data
   reaches the page through textContent. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function option(select, value, text) {
    var o = el("option", null, text);
    o.value = String(value);
    select.appendChild(o);
    return o;
  }

  function bytesOf(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // One level of one input: gunzip the arrays (offset = row - column per link, then weights, specials and
  // self mass as bytes of 1/255).
  function unpack(level, L, H) {
    var gz = new Blob([bytesOf(level.data)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(gz).arrayBuffer().then(function (buf) {
      var R = level.labels.length, k = level.k, n = L * H * R * k, width = level.offset_bytes;
      var off = width === 2 ? new Int16Array(buf, 0, n) : new Int32Array(buf, 0, n);
      var at = n * width;
      var weight = new Uint8Array(buf, at, n); at += n;
      var specials = new Uint8Array(buf, at, L * H * R); at += L * H * R;
      var self = new Uint8Array(buf, at, L * H * R);
      return {R: R, k: k, off: off, weight: weight, specials: specials, self: self, none: level.none,
              labels: level.labels, level: level};
    });
  }

  function Viewer(root, data) {
    this.root = root;
    this.data = data;
    this.L = data.layers;
    this.H = data.heads;
    this.cache = {};
    var init = data.initial || {};
    this.state = {doc: init.doc || 0, level: init.level || "word", layer: init.layer || 0, head: init.head || 0,
                  selected: init.word === undefined ? null : init.word, hover: null,
                  direction: init.direction || "both"};
    this.build();
    this.load();
  }

  Viewer.prototype.build = function () {
    var self = this, root = this.root, data = this.data;
    root.textContent = "";
    var bar = el("div", "hs-controls");
    function labelled(text, control) {
      var lab = el("label", null, text + " ");
      lab.appendChild(control);
      bar.appendChild(lab);
      return control;
    }
    this.docSelect = labelled("input", el("select", "hs-doc"));
    data.docs.forEach(function (d, i) { option(self.docSelect, i, d.title); });
    if (data.docs.length < 2) this.docSelect.parentNode.hidden = true;
    this.levelSelect = labelled("level", el("select", "hs-level"));
    this.layerSelect = labelled("layer", el("select", "hs-layer"));
    for (var l = 0; l < this.L; l++) option(this.layerSelect, l, String(l));
    this.headSelect = labelled("head", el("select", "hs-head"));
    for (var h = 0; h < this.H; h++) option(this.headSelect, h, String(h));
    this.roleSelect = labelled("role", el("select", "hs-role"));
    option(this.roleSelect, "", "(pick a head by role)");
    (data.head_info || []).forEach(function (row, layer) {
      row.forEach(function (info, head) {
        if (info && info.roles && info.roles.length)
          option(self.roleSelect, layer + "," + head, "L" + layer + ".H" + head + " " +
                 info.roles.map(function (r) { return r.role; }).join("; "));
      });
    });
    if (this.roleSelect.options.length < 2) this.roleSelect.parentNode.hidden = true;
    this.dirSelect = labelled("links", el("select", "hs-direction"));
    ["both", "from", "to"].forEach(function (d) { option(self.dirSelect, d, d); });
    root.appendChild(bar);

    // The text, its note and the grid of heads share the left column, the head's panel the right one: the grid
    // fills the room under a short sentence instead of starting below a long panel.
    var main = el("div", "hs-main"), left = el("div", "hs-left");
    var stage = el("div", "hs-stage");
    this.text = el("div", "hs-text");
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("class", "hs-lines");
    stage.appendChild(this.text);
    stage.appendChild(this.svg);
    left.appendChild(stage);
    this.note = el("p", "hs-note");
    left.appendChild(this.note);
    this.grid = el("div", "hs-grid");
    left.appendChild(this.grid);
    main.appendChild(left);
    this.side = el("aside", "hs-side");
    main.appendChild(this.side);
    root.appendChild(main);

    this.docSelect.addEventListener("change", function () {
      self.state.doc = +self.docSelect.value; self.state.selected = null; self.load();
    });
    this.levelSelect.addEventListener("change", function () {
      self.state.level = self.levelSelect.value; self.state.selected = null; self.load();
    });
    this.layerSelect.addEventListener("change", function () { self.pick(+self.layerSelect.value, self.state.head); });
    this.headSelect.addEventListener("change", function () { self.pick(self.state.layer, +self.headSelect.value); });
    this.roleSelect.addEventListener("change", function () {
      if (!self.roleSelect.value) return;
      var p = self.roleSelect.value.split(",");
      self.pick(+p[0], +p[1]);
    });
    this.dirSelect.addEventListener("change", function () { self.state.direction = self.dirSelect.value; self.draw(); });
    this.text.addEventListener("click", function (e) {
      var i = e.target.getAttribute && e.target.getAttribute("data-i");
      if (i === null || i === undefined) return;
      self.state.selected = +i; self.draw();
    });
    this.text.addEventListener("mouseover", function (e) {
      var i = e.target.getAttribute && e.target.getAttribute("data-i");
      if (i === null || i === undefined) return;
      self.state.hover = +i; self.draw();
    });
    this.text.addEventListener("mouseleave", function () { self.state.hover = null; self.draw(); });
    window.addEventListener("resize", function () { self.draw(); });
  };

  Viewer.prototype.doc = function () { return this.data.docs[this.state.doc]; };

  // What one unit of the current level is called: "token" or "word".
  Viewer.prototype.unit = function () { return this.state.level === "token" ? "token" : "word"; };

  Viewer.prototype.load = function () {
    var self = this, doc = this.doc(), levels = Object.keys(doc.levels);
    if (levels.indexOf(this.state.level) < 0) this.state.level = levels[0];
    this.levelSelect.textContent = "";
    levels.forEach(function (lv) { option(self.levelSelect, lv, lv); });
    this.levelSelect.value = this.state.level;
    this.levelSelect.parentNode.hidden = levels.length < 2;
    var key = this.state.doc + ":" + this.state.level;
    var ready = this.cache[key] ? Promise.resolve(this.cache[key])
      : unpack(doc.levels[this.state.level], this.L, this.H).then(function (u) { self.cache[key] = u; return u; });
    this.root.setAttribute("data-ready", "0");
    return ready.then(function (u) {
      self.cur = u;
      self.renderText();
      self.renderGrid();
      self.draw();
      self.root.setAttribute("data-ready", "1");
    }).catch(function (err) {
      self.note.textContent = "The viewer could not read its data: " + err;
      self.root.setAttribute("data-ready", "error");
      throw err;
    });
  };

  Viewer.prototype.renderText = function () {
    var u = this.cur, lv = u.level, frag = document.createDocumentFragment();
    this.spans = [];
    for (var i = 0; i < u.R; i++) {
      var s = el("span", "hs-unit", u.labels[i]);
      s.setAttribute("data-i", String(i));
      frag.appendChild(s);
      this.spans.push(s);
      if (lv.level === "token" || !lv.space_after || lv.space_after[i]) frag.appendChild(document.createTextNode(" "));
    }
    this.text.textContent = "";
    this.text.className = "hs-text hs-" + lv.level;
    var unit = this.unit(), names = {both: "from and to the ", from: "from the ", to: "to the "};
    Array.prototype.forEach.call(this.dirSelect.options, function (o) { o.textContent = names[o.value] + unit; });
    this.text.appendChild(frag);
    var specials = lv.specials || [];
    this.note.textContent = (lv.level === "token" ? "Tokens as the tokenizer writes them. " : "") +
      "Each row keeps its " + u.k + " strongest links to other " + (lv.level === "token" ? "tokens" : "words") +
      " (weights to 1/255)" + (specials.length ? "; attention on the special tokens (" + specials.join(" ") +
      ") and on the unit itself is given beside the text." : "; attention on the unit itself is given beside it.");
  };

  // Links of unit i in the current head: [{from, to, weight}], weights in 0..1.
  Viewer.prototype.linksOf = function (i, direction) {
    var u = this.cur, k = u.k, R = u.R, base = (this.state.layer * this.H + this.state.head) * R * k, out = [];
    if (direction !== "to") {
      for (var t = 0; t < k; t++) {
        var w = u.weight[base + i * k + t], o = u.off[base + i * k + t];
        if (w > 0 && o !== u.none) out.push({from: i, to: i - o, weight: w / 255, dir: "from"});
      }
    }
    if (direction !== "from") {
      for (var r = 0; r < R; r++) {
        for (var s = 0; s < k; s++) {
          var idx = base + r * k + s, ww = u.weight[idx];
          if (ww > 0 && u.off[idx] !== u.none && r - u.off[idx] === i)
            out.push({from: r, to: i, weight: ww / 255, dir: "to"});
        }
      }
    }
    return out;
  };

  Viewer.prototype.pick = function (layer, head) {
    this.state.layer = layer;
    this.state.head = head;
    this.draw();
  };

  Viewer.prototype.draw = function () {
    if (!this.cur) return;
    var st = this.state, u = this.cur, self = this;
    this.layerSelect.value = String(st.layer);
    this.headSelect.value = String(st.head);
    this.dirSelect.value = st.direction;
    var rv = st.layer + "," + st.head;
    this.roleSelect.value = Array.prototype.some.call(this.roleSelect.options, function (o) { return o.value === rv; })
      ? rv : "";
    var focus = st.hover !== null ? st.hover : st.selected;
    this.spans.forEach(function (s) { s.classList.remove("hs-focus", "hs-target"); s.style.backgroundColor = ""; });
    while (this.svg.firstChild) this.svg.removeChild(this.svg.firstChild);
    var stage = this.text.getBoundingClientRect();
    this.svg.setAttribute("width", String(this.text.scrollWidth));
    this.svg.setAttribute("height", String(this.text.scrollHeight));
    var links = focus === null || focus >= u.R ? [] : this.linksOf(focus, st.direction);
    if (focus !== null && focus < u.R) this.spans[focus].classList.add("hs-focus");
    // An arc leaves each word from above its top edge (by half the stroke and a pixel), so that no arc covers
    // the word it links, the clicked one included.
    function anchor(i, gap) {
      var r = self.spans[i].getBoundingClientRect();
      return [r.left - stage.left + r.width / 2, r.top - stage.top - gap];
    }
    links.forEach(function (ln) {
      var other = ln.dir === "from" ? ln.to : ln.from;
      if (other < 0 || other >= u.R) return;
      var width = 0.6 + 7 * ln.weight, a = anchor(ln.from, width / 2 + 1), b = anchor(ln.to, width / 2 + 1);
      var lift = Math.min(60, 12 + Math.abs(a[0] - b[0]) / 6 + Math.abs(a[1] - b[1]) / 4);
      var mx = (a[0] + b[0]) / 2, my = Math.min(a[1], b[1]) - lift;
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", "M" + a[0] + " " + a[1] + " Q" + mx + " " + my + " " + b[0] + " " + b[1]);
      path.setAttribute("class", "hs-link hs-" + ln.dir);
      path.setAttribute("stroke-width", String(width));
      path.setAttribute("data-from", String(ln.from));
      path.setAttribute("data-to", String(ln.to));
      path.setAttribute("data-weight", ln.weight.toFixed(3));
      self.svg.appendChild(path);
      var span = self.spans[other];
      span.classList.add("hs-target");
      span.style.backgroundColor = (ln.dir === "from" ? "rgba(31,119,180," : "rgba(255,127,14,") +
        Math.min(0.85, 0.15 + ln.weight) + ")";
    });
    this.root.setAttribute("data-layer", String(st.layer));
    this.root.setAttribute("data-head", String(st.head));
    this.root.setAttribute("data-selected", focus === null ? "" : String(focus));
    this.root.setAttribute("data-links", String(links.length));
    this.renderSide(focus, links);
    Array.prototype.forEach.call(this.grid.children, function (cell) {
      cell.classList.toggle("hs-current", cell.getAttribute("data-head") === rv);
    });
  };

  Viewer.prototype.renderSide = function (focus, links) {
    var st = this.state, u = this.cur, side = this.side;
    side.textContent = "";
    var info = ((this.data.head_info || [])[st.layer] || [])[st.head] || {};
    side.appendChild(el("h3", null, "L" + st.layer + ".H" + st.head + (info.label ? " · " + info.label : "")));
    if (info.roles && info.roles.length) {
      var ul = el("ul", "hs-roles");
      info.roles.forEach(function (r) {
        var li = el("li", null, r.role + (r.score === null || r.score === undefined ? "" : ": " + r.score));
        if (r.criterion) li.title = r.criterion;
        ul.appendChild(li);
      });
      side.appendChild(ul);
    } else {
      side.appendChild(el("p", "hs-muted", this.data.roles_note || "No role found for this head."));
    }
    this.renderRanking(side);
    this.renderDistance(side);
    if (focus === null || focus >= u.R) {
      side.appendChild(el("p", "hs-muted", "Click or point at a " + this.unit() + " to see this head's links."));
      return;
    }
    var at = (st.layer * this.H + st.head) * u.R + focus;
    side.appendChild(el("p", null, "“" + u.labels[focus] + "” (" + focus + "): on itself " +
      (u.self[at] / 255).toFixed(2) + ", on special tokens " + (u.specials[at] / 255).toFixed(2)));
    var table = el("table", "hs-linklist"), head = el("tr");
    ["", this.unit(), "weight"].forEach(function (t) { head.appendChild(el("th", null, t)); });
    table.appendChild(head);
    links.slice().sort(function (a, b) { return b.weight - a.weight; }).forEach(function (ln) {
      var tr = el("tr", "hs-" + ln.dir), other = ln.dir === "from" ? ln.to : ln.from;
      tr.appendChild(el("td", null, ln.dir === "from" ? "→" : "←"));
      tr.appendChild(el("td", null, other >= 0 && other < u.R ? u.labels[other] : "?"));
      tr.appendChild(el("td", null, ln.weight.toFixed(2)));
      table.appendChild(tr);
    });
    side.appendChild(table);
  };

  // explain --target: the heads that link the word to the target most, each with its weight and what it writes
  // from there (norm); a row opens its head.
  Viewer.prototype.renderRanking = function (side) {
    var r = this.data.ranking, st = this.state, self = this;
    if (!r || !r.heads || !r.heads.length) return;
    side.appendChild(el("div", "hs-caption", "heads linking “" + r.word + "” to “" + r.target + "”" +
                        (r.others && r.others.length ? " rather than " + r.others.join(", ") : "")));
    var table = el("table", "hs-linklist hs-ranking"), head = el("tr");
    r.columns.forEach(function (t) { head.appendChild(el("th", null, t)); });
    table.appendChild(head);
    r.heads.forEach(function (h) {
      var tr = el("tr", h.layer === st.layer && h.head === st.head ? "hs-current" : null);
      tr.setAttribute("data-head", h.layer + "," + h.head);
      tr.appendChild(el("td", null, "L" + h.layer + ".H" + h.head));
      h.values.forEach(function (v) { tr.appendChild(el("td", null, v === null ? "—" : v.toFixed(3))); });
      table.appendChild(tr);
    });
    table.onclick = function (e) {
      var row = e.target.closest && e.target.closest("tr[data-head]");
      if (!row) return;
      var p = row.getAttribute("data-head").split(",");
      self.pick(+p[0], +p[1]);
    };
    side.appendChild(table);
  };

  // The head's distance profile over this input: mean attention per row at each token-offset bin, as bars, each
  // bin labelled with its offsets under it.
  Viewer.prototype.renderDistance = function (side) {
    var d = this.doc().distance, st = this.state;
    if (!d) return;
    var mass = d.mass[st.layer][st.head], W = 240, Hh = 60, n = mass.length, bw = W / n;
    var longest = Math.max.apply(null, d.labels.map(function (t) { return t.length; }).concat([1]));
    var room = Math.ceil(6 + 4.2 * longest);                 // the slanted labels' height
    var top = Math.max.apply(null, mass.concat([1e-9]));
    side.appendChild(el("div", "hs-caption", "attention by token offset" + (d.absolute ? " (both ways)" : "") +
                        ", mean per row"));
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "hs-distance");
    svg.setAttribute("width", String(W));
    svg.setAttribute("height", String(Hh + room));
    mass.forEach(function (m, i) {
      var h = Math.max(m > 0 ? 1 : 0, Math.round(Hh * m / top));
      var r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", String(i * bw + 1));
      r.setAttribute("y", String(Hh - h));
      r.setAttribute("width", String(Math.max(1, bw - 2)));
      r.setAttribute("height", String(h));
      r.setAttribute("data-mass", m.toFixed(4));
      var tip = document.createElementNS(SVG, "title");
      tip.textContent = "offset " + d.labels[i] + ": " + m.toFixed(3);
      r.appendChild(tip);
      svg.appendChild(r);
      var t = document.createElementNS(SVG, "text"), x = i * bw + bw / 2, y = Hh + 10;
      t.setAttribute("x", String(x));
      t.setAttribute("y", String(y));
      t.setAttribute("text-anchor", "end");
      t.setAttribute("transform", "rotate(-45 " + x + " " + y + ")");
      t.setAttribute("class", "hs-bin");
      t.textContent = d.labels[i];
      svg.appendChild(t);
    });
    side.appendChild(svg);
    side.appendChild(el("div", "hs-caption hs-axis-title", "token offset"));
  };

  // Every head as a thumbnail: each row's links as points (row down, column across), on its role's colour.
  Viewer.prototype.renderGrid = function () {
    var self = this, u = this.cur, S = 40, k = u.k, R = u.R, colours = this.data.families || {};
    this.grid.textContent = "";
    this.grid.style.gridTemplateColumns = "repeat(" + (this.H + 1) + ", auto)";
    this.grid.appendChild(el("span", "hs-axis", "L\\H"));
    for (var h = 0; h < this.H; h++) this.grid.appendChild(el("span", "hs-axis", String(h)));
    var heat = new Float32Array(S * S);
    for (var layer = 0; layer < this.L; layer++) {
      this.grid.appendChild(el("span", "hs-axis", String(layer)));
      for (var head = 0; head < this.H; head++) {
        var info = ((this.data.head_info || [])[layer] || [])[head] || {};
        var cell = el("button", "hs-thumb");
        cell.type = "button";
        cell.setAttribute("data-head", layer + "," + head);
        cell.title = "L" + layer + ".H" + head + (info.roles && info.roles.length ? ": " +
          info.roles.map(function (r) { return r.role; }).join("; ") : "");
        cell.style.borderColor = colours[info.family || "none"] || "#bbb";
        var canvas = el("canvas");
        canvas.width = S; canvas.height = S;
        heat.fill(0);
        var base = (layer * this.H + head) * R * k;
        for (var r = 0; r < R; r++) {
          var y0 = Math.floor(r * S / R), y1 = Math.max(y0 + 1, Math.floor((r + 1) * S / R));
          for (var t = 0; t < k; t++) {
            var w = u.weight[base + r * k + t];
            if (!w || u.off[base + r * k + t] === u.none) continue;
            var c = r - u.off[base + r * k + t];
            if (c < 0 || c >= R) continue;
            var x0 = Math.floor(c * S / R), x1 = Math.max(x0 + 1, Math.floor((c + 1) * S / R));
            for (var yy = y0; yy < y1; yy++) for (var xx = x0; xx < x1; xx++) heat[yy * S + xx] += w / 255;
          }
        }
        // a pixel row holds R / S rows of a long input; the square root shows weak links too
        var scale = Math.max(1, R / S), ctx = canvas.getContext("2d"), img = ctx.createImageData(S, S);
        for (var p = 0; p < S * S; p++) {
          var v = Math.sqrt(Math.min(1, heat[p] / scale));
          img.data[4 * p] = 255 - Math.round(200 * v);
          img.data[4 * p + 1] = 255 - Math.round(190 * v);
          img.data[4 * p + 2] = 255 - Math.round(120 * v);
          img.data[4 * p + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        cell.appendChild(canvas);
        this.grid.appendChild(cell);
      }
    }
    this.grid.onclick = function (e) {
      var b = e.target.closest && e.target.closest(".hs-thumb");
      if (!b) return;
      var p = b.getAttribute("data-head").split(",");
      self.pick(+p[0], +p[1]);
    };
    var legend = el("div", "hs-legend");
    Object.keys(colours).forEach(function (f) {
      var item = el("span", "hs-key", f);
      item.style.borderColor = colours[f];
      legend.appendChild(item);
    });
    this.grid.parentNode.insertBefore(legend, this.grid);
    if (this.legend) this.legend.remove();
    this.legend = legend;
  };

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".hs-viewer"), function (root) {
      var source = document.getElementById(root.getAttribute("data-source"));
      if (!source) return;
      try {
        root.viewer = new Viewer(root, JSON.parse(source.textContent));
      } catch (err) {
        root.textContent = "The viewer could not start: " + err;
        root.setAttribute("data-ready", "error");
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
