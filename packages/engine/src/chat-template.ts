import { Template } from '@huggingface/jinja';
import { InvalidArgumentError } from '@x/core';

/** One chat message as OpenAI and transformers' chat templates take it. */
export interface ChatMessage {
  role: string;
  content: string | null | Array<Record<string, unknown>>;
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** Append the assistant turn header so the model answers next (default true). */
  addGenerationPrompt?: boolean;
  /** Tool definitions (OpenAI format), passed to the template as `tools`. */
  tools?: unknown[];
  /** Extra variables, like transformers' `**kwargs` (e.g. `enable_thinking`). */
  extra?: Record<string, unknown>;
}

/**
 * A compiled chat template. Renders with the variables transformers passes: `messages`,
 * `add_generation_prompt`, `tools` and the special tokens (`bos_token`, `eos_token`, ...);
 * `raise_exception` and `strftime_now` are built into @huggingface/jinja.
 */
export class ChatTemplate {
  readonly source: string;
  readonly #template: Template;
  readonly #specialTokens: Record<string, string>;

  constructor(source: string, specialTokens: Record<string, string>) {
    this.source = source;
    this.#template = new Template(source);
    this.#specialTokens = specialTokens;
  }

  /** The prompt text for `messages`. Template errors (raise_exception) are InvalidArgumentErrors. */
  render(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!Array.isArray(messages)) {
      throw new InvalidArgumentError('messages', 'an array of {role, content}', messages);
    }
    try {
      return this.#template.render({
        ...this.#specialTokens,
        ...options.extra,
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? true,
        ...(options.tools === undefined ? {} : { tools: options.tools }),
      });
    } catch (err) {
      // raise_exception() in a template (e.g. "roles must alternate") is the caller's fault.
      throw new InvalidArgumentError(
        'messages',
        'messages the chat template accepts',
        (err as Error).message,
        { cause: err },
      );
    }
  }
}
