// A small live line chart on a <canvas>: a rolling window of samples, one or two series.

import { h } from './dom.js';

const COLORS = ['#2563eb', '#dc2626', '#059669'];

export class LineChart {
  /**
   * @param {HTMLElement} host
   * @param {string} title
   * @param {string[]} series  names of the lines
   * @param {{unit?: string, points?: number}} options
   */
  constructor(host, title, series, { unit = '', points = 120 } = {}) {
    this.series = series;
    this.unit = unit;
    this.points = points;
    this.data = series.map(() => []);
    this.value = h('span.chart-value', {}, '—');
    this.canvas = h('canvas', { width: 460, height: 150 });
    this.card = h('div.card.chart', { dataset: { chart: title } },
      h('div.chart-head', {}, h('h3', {}, title), this.value), this.canvas,
      h('div.legend', {}, series.map((name, i) =>
        h('span', { style: `color:${COLORS[i]}` }, '● ' + name))));
    host.append(this.card);
  }

  /** Add one sample per series (null: no value this time, drawn as a gap). */
  push(...values) {
    values.forEach((v, i) => {
      const line = this.data[i];
      line.push(v);
      if (line.length > this.points) line.shift();
    });
    const shown = values.map((v) => (v === null || v === undefined ? '—' : fmt(v) + this.unit));
    this.value.textContent = shown.join(' / ');
    this.draw();
  }

  draw() {
    const ctx = this.canvas.getContext('2d');
    const { width, height } = this.canvas;
    const pad = { l: 44, r: 8, t: 8, b: 18 };
    ctx.clearRect(0, 0, width, height);
    const all = this.data.flat().filter((v) => v !== null && v !== undefined);
    const max = Math.max(1, ...all) * 1.15;
    ctx.strokeStyle = '#e5e7eb';
    ctx.fillStyle = '#6b7280';
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 3; i++) {
      const y = pad.t + ((height - pad.t - pad.b) * i) / 3;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(width - pad.r, y);
      ctx.stroke();
      ctx.fillText(fmt(max * (1 - i / 3)), 4, y + 4);
    }
    // the window grows with the samples up to `points` (a fresh page is not one dot at the edge)
    const span = Math.min(this.points, Math.max(30, ...this.data.map((l) => l.length)));
    ctx.fillText(`last ${span} s`, pad.l, height - 4);
    const x = (i) => pad.l + ((width - pad.l - pad.r) * i) / Math.max(1, span - 1);
    const y = (v) => height - pad.b - ((height - pad.t - pad.b) * v) / max;
    this.data.forEach((line, s) => {
      ctx.strokeStyle = COLORS[s];
      ctx.lineWidth = 2;
      ctx.beginPath();
      let drawing = false;
      const offset = span - line.length;
      line.forEach((v, i) => {
        if (v === null || v === undefined) { drawing = false; return; }
        if (drawing) ctx.lineTo(x(offset + i), y(v));
        else ctx.moveTo(x(offset + i), y(v));
        drawing = true;
      });
      ctx.stroke();
    });
  }
}

function fmt(v) {
  if (Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + 'k';
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
}
