import { Type } from '@sinclair/typebox';

/** Every config object refuses unknown keys: a misspelt setting is an error, never ignored. */
export const Strict = { additionalProperties: false } as const;

export const NonEmpty = Type.String({ minLength: 1 });
