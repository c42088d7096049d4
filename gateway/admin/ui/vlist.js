// A virtualised list: only the rows in view (plus a margin) exist in the DOM, so a timeline of
// 10,000 events scrolls as smoothly as one of 10. Rows have one fixed height.

import { h } from './dom.js';

export class VirtualList {
  /**
   * @param {HTMLElement} host   where the list goes
   * @param {(item, index) => HTMLElement} renderRow
   * @param {{rowHeight?: number, height?: number, onSelect?: (index) => void}} options
   */
  constructor(host, renderRow, { rowHeight = 28, height = 420, onSelect } = {}) {
    this.renderRow = renderRow;
    this.rowHeight = rowHeight;
    this.onSelect = onSelect;
    this.items = [];
    this.selected = -1;
    this.viewport = h('div.vlist', { style: `height:${height}px`, tabIndex: 0 });
    this.spacer = h('div.vlist-spacer');
    this.rows = h('div.vlist-rows');
    this.viewport.append(this.spacer, this.rows);
    host.append(this.viewport);
    let pending = false;
    this.viewport.addEventListener('scroll', () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; this.draw(); });
    });
    this.viewport.addEventListener('keydown', (e) => {
      const step = { ArrowDown: 1, ArrowUp: -1, PageDown: 20, PageUp: -20 }[e.key];
      if (step && this.items.length) {
        e.preventDefault();
        this.select(Math.max(0, Math.min(this.items.length - 1, this.selected + step)));
      }
    });
  }

  setItems(items) {
    this.items = items;
    this.spacer.style.height = `${items.length * this.rowHeight}px`;
    if (this.selected >= items.length) this.selected = items.length - 1;
    this.draw();
  }

  /** Select row `index` (scrolled into view) and tell `onSelect`. */
  select(index, { notify = true } = {}) {
    this.selected = index;
    const top = index * this.rowHeight;
    const view = this.viewport;
    if (top < view.scrollTop) view.scrollTop = top;
    else if (top + this.rowHeight > view.scrollTop + view.clientHeight) {
      view.scrollTop = top + this.rowHeight - view.clientHeight;
    }
    this.draw();
    if (notify && this.onSelect) this.onSelect(index);
  }

  /** How many row elements exist now (the test checks it stays small). */
  get rendered() { return this.rows.childElementCount; }

  draw() {
    const { scrollTop, clientHeight } = this.viewport;
    const first = Math.max(0, Math.floor(scrollTop / this.rowHeight) - 10);
    const last = Math.min(this.items.length, Math.ceil((scrollTop + clientHeight) / this.rowHeight) + 10);
    const fragment = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const row = this.renderRow(this.items[i], i);
      row.classList.add('vrow');
      if (i === this.selected) row.classList.add('selected');
      row.style.top = `${i * this.rowHeight}px`;
      row.style.height = `${this.rowHeight}px`;
      row.dataset.index = String(i);
      row.addEventListener('click', () => this.select(i));
      fragment.append(row);
    }
    this.rows.replaceChildren(fragment);
  }
}
