import type { Hint, NextStep } from '../errors.js';

/** What a hint needs to know of the invocation to be runnable as it stands. */
export interface HintView {
  /** The invocation's profile: the one a NextStep without its own is about. */
  profile?: string | undefined;
  /**
   * The profile used without --profile or MXS_PROFILE (`mxs switch`, else `default`); null when
   * that cannot be known (an unreadable config file), and then every hint names its profile.
   */
  defaultProfile: string | null;
}

/**
 * The one renderer of hints. A command in a hint names ` --profile NAME` only when NAME is not the
 * default profile: after `mxs switch work`, a hint for `work` needs no flag and one for `default` does.
 */
export function renderHint(hint: Hint, view: HintView): string {
  if (typeof hint === 'string') return hint;
  if (isNextStep(hint)) return `Run: ${nextCommand(hint, view)}`;
  return hint.map((part) => (typeof part === 'string' ? part : nextCommand(part, view))).join('');
}

/** ` --profile NAME`, or nothing when NAME is the default profile. */
export function profileFlag(profile: string | undefined, view: HintView): string {
  return profile === undefined || profile === view.defaultProfile ? '' : ` --profile ${profile}`;
}

function nextCommand(step: NextStep, view: HintView): string {
  const server = step.next === 'login' ? ` ${step.server ?? 'SERVER'}` : '';
  const flags = step.flags ? ` ${step.flags}` : '';
  const rest = step.rest ? ` ${step.rest}` : '';
  return `mxs ${step.next}${server}${flags}${profileFlag(step.profile ?? view.profile, view)}${rest}`;
}

function isNextStep(hint: Hint): hint is NextStep {
  return !Array.isArray(hint);
}
