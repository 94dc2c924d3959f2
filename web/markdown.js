'use strict';
// Markdown -> HTML for model answers, safe by construction: every piece of the source is
// HTML-escaped before it is placed, and the only markup in the output is the fixed set of
// tags written here (links only for http(s) URLs). What it covers is what chat models write:
// fenced code, headings, lists, block quotes, rules, paragraphs with line breaks, inline code,
// bold, italics and links. A fence still open (a streaming answer) renders as code so far.
(function (global) {
  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  function escapeHtml(s) { return String(s).replace(/[&<>"']/g, (c) => ESC[c]); }

  // Bold and italics on already-escaped text (escaping leaves no '<' for these to break).
  function emphasis(s) {
    s = s.replace(/\*\*(?=\S)([^*]*?\S)\*\*/g, '<strong>$1</strong>');
    s = s.replace(/__(?=\S)([^_]*?\S)__/g, '<strong>$1</strong>');
    s = s.replace(/(^|[^*\w])\*(?=\S)([^*]*?\S)\*(?!\*)/g, '$1<em>$2</em>');
    s = s.replace(/(^|[^_\w])_(?=\S)([^_]*?\S)_(?!\w)/g, '$1<em>$2</em>');
    return s;
  }

  // Code spans and links are cut out of the raw text first, so their contents are never
  // touched by emphasis and a URL is escaped once, as an attribute.
  function inline(raw) {
    const re = /`([^`]+)`|\[([^\]]+)\]\(([^()\s]+)\)/g;
    let out = '';
    let at = 0;
    for (let m; (m = re.exec(raw)) !== null; ) {
      out += emphasis(escapeHtml(raw.slice(at, m.index)));
      if (m[1] !== undefined) {
        out += '<code>' + escapeHtml(m[1]) + '</code>';
      } else if (/^https?:\/\//i.test(m[3])) {
        out += '<a href="' + escapeHtml(m[3]) + '" target="_blank" rel="noopener noreferrer">' + emphasis(escapeHtml(m[2])) + '</a>';
      } else {
        out += emphasis(escapeHtml(m[0]));  // not a web link: shown as written
      }
      at = re.lastIndex;
    }
    return out + emphasis(escapeHtml(raw.slice(at)));
  }

  const FENCE = /^\s*(```|~~~)\s*([\w+-]*)\s*$/;
  const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  const ITEM = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  function render(src) {
    const lines = String(src).replace(/\r\n?/g, '\n').split('\n');
    let html = '';
    for (let i = 0; i < lines.length; ) {
      const line = lines[i];
      let m;
      if ((m = FENCE.exec(line))) {
        const code = [];
        for (i++; i < lines.length && !(FENCE.test(lines[i]) && lines[i].trim().startsWith(m[1])); i++) code.push(lines[i]);
        i++;  // the closing fence (or past the end)
        const lang = m[2] ? ' class="language-' + escapeHtml(m[2]) + '"' : '';
        html += '<pre><code' + lang + '>' + escapeHtml(code.join('\n')) + '</code></pre>';
      } else if ((m = HEADING.exec(line))) {
        const n = m[1].length;
        html += '<h' + n + '>' + inline(m[2]) + '</h' + n + '>';
        i++;
      } else if (RULE.test(line)) {
        html += '<hr>';
        i++;
      } else if (QUOTE.test(line)) {
        const inner = [];
        for (; i < lines.length && (m = QUOTE.exec(lines[i])); i++) inner.push(m[1]);
        html += '<blockquote>' + render(inner.join('\n')) + '</blockquote>';
      } else if ((m = ITEM.exec(line))) {
        const ordered = /\d/.test(m[1]);
        const items = [];
        while (i < lines.length) {
          const it = ITEM.exec(lines[i]);
          if (it && /\d/.test(it[1]) === ordered) {
            items.push(it[2]);
            i++;
          } else if (items.length && /^\s+\S/.test(lines[i]) && !startsBlock(lines[i])) {
            items[items.length - 1] += '\n' + lines[i].trim();  // a continuation line
            i++;
          } else {
            break;
          }
        }
        const tag = ordered ? 'ol' : 'ul';
        const start = ordered && parseInt(m[1], 10) !== 1 ? ' start="' + parseInt(m[1], 10) + '"' : '';
        html += '<' + tag + start + '>' + items.map((t) => '<li>' + t.split('\n').map(inline).join('<br>') + '</li>').join('') + '</' + tag + '>';
      } else if (line.trim() === '') {
        i++;
      } else {
        const para = [];
        for (; i < lines.length && lines[i].trim() !== '' && !startsBlock(lines[i]); i++) para.push(lines[i]);
        html += '<p>' + para.map(inline).join('<br>') + '</p>';
      }
    }
    return html;
  }

  global.renderMarkdown = render;
  global.escapeHtml = escapeHtml;
})(typeof window !== 'undefined' ? window : globalThis);
