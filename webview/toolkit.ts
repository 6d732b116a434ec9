// The only module that imports @vscode/webview-ui-toolkit (deprecated upstream, January 2025): the
// views build their controls through these functions, so moving to another component library
// (e.g. @vscode-elements/elements) changes this file alone.
import {
  provideVSCodeDesignSystem,
  vsCodeButton,
  vsCodeCheckbox,
  vsCodeDivider,
  vsCodeDropdown,
  vsCodeOption,
  vsCodeProgressRing,
  vsCodeTextField,
} from '@vscode/webview-ui-toolkit';

/** A control with a string value (text field, dropdown). */
export interface ValueControl extends HTMLElement {
  value: string;
  disabled: boolean;
}

export interface CheckControl extends HTMLElement {
  checked: boolean;
  disabled: boolean;
}

export interface ButtonControl extends HTMLElement {
  disabled: boolean;
}

let registered = false;

export function registerControls(): void {
  if (registered) return;
  registered = true;
  provideVSCodeDesignSystem().register(vsCodeButton(), vsCodeCheckbox(), vsCodeDivider(), vsCodeDropdown(), vsCodeOption(), vsCodeProgressRing(), vsCodeTextField());
}

function make<T extends HTMLElement>(tag: string, id: string | null, attrs: Record<string, string> = {}): T {
  const el = document.createElement(tag) as T;
  if (id) el.id = id;
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

export function button(id: string, label: string, options: { appearance?: 'primary' | 'secondary' | 'icon'; title?: string } = {}): ButtonControl {
  const el = make<ButtonControl>('vscode-button', id, { appearance: options.appearance ?? 'primary' });
  if (options.title) {
    el.title = options.title;
    el.setAttribute('aria-label', options.title);
  }
  el.textContent = label;
  return el;
}

export function textField(id: string, options: { value?: string; placeholder?: string; label?: string } = {}): ValueControl {
  const el = make<ValueControl>('vscode-text-field', id);
  if (options.placeholder) el.setAttribute('placeholder', options.placeholder);
  el.setAttribute('value', options.value ?? '');
  if (options.label) el.setAttribute('aria-label', options.label);
  return el;
}

export function dropdown(id: string, choices: readonly { value: string; label: string }[], value: string, label?: string): ValueControl {
  const el = make<ValueControl>('vscode-dropdown', id);
  if (label) el.setAttribute('aria-label', label);
  for (const c of choices) {
    const opt = make<HTMLElement>('vscode-option', null, { value: c.value });
    opt.textContent = c.label;
    if (c.value === value) opt.setAttribute('selected', '');
    el.appendChild(opt);
  }
  return el;
}

export function checkbox(id: string, label: string, checked: boolean): CheckControl {
  const el = make<CheckControl>('vscode-checkbox', id);
  if (checked) el.setAttribute('checked', '');
  el.textContent = label;
  return el;
}

export function progressRing(id: string): HTMLElement {
  return make('vscode-progress-ring', id);
}

export function divider(): HTMLElement {
  return make('vscode-divider', null);
}
