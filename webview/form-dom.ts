// DOM pieces the settings forms (Titanize, Align) build alike: a labelled field row with its help and
// inline error, and an alert line for errors that belong to no field.
import { el } from './dom';

/** A hidden line that screen readers announce when it is filled and shown (role=alert). */
export function alertLine(className: string, id: string): HTMLElement {
  const e = el('div', className, undefined, id);
  e.setAttribute('role', 'alert');
  e.hidden = true;
  return e;
}

/**
 * A field row: label (for the control `controlId`), the control line (`controls`), help text and the
 * field's inline error (`<controlId>-error`), which the caller fills and shows.
 */
export function fieldRow(label: string, controlId: string, controls: HTMLElement[], help: string): { row: HTMLElement; error: HTMLElement } {
  const row = el('div', 'field');
  const labelEl = el('label', 'field-label', label);
  labelEl.htmlFor = controlId;
  const line = el('div', 'field-control');
  line.append(...controls);
  const error = alertLine('field-error', `${controlId}-error`);
  row.append(labelEl, line, el('div', 'field-help', help), error);
  return { row, error };
}
