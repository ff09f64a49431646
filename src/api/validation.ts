import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import { Value } from '@sinclair/typebox/value';
import type { FastifySchemaCompiler } from 'fastify';
import { BadRequestError } from '../errors/errors.ts';

/**
 * Fastify's validator compiler, on TypeBox's compiler instead of Ajv with Fastify's defaults,
 * which would coerce `"yes"` into a boolean and silently drop unknown body properties. Here:
 * - bodies are checked strictly: no coercion, unknown properties are an error, and a missing
 *   body is the empty object;
 * - params and query strings are strings on the wire, so numbers and booleans are converted
 *   first, and defaults applied;
 * - headers are checked as they are (only the headers a route names are looked at).
 * The first problem becomes a BadRequestError naming the field: `/body/deep must be boolean`.
 */
export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const checker = TypeCompiler.Compile(schema);
  const part = httpPart === 'querystring' ? 'query' : (httpPart ?? 'request');
  return (data: unknown) => {
    try {
      let value: unknown = data;
      if (httpPart === 'body') {
        if (value === null || value === undefined) value = {};
      } else if (httpPart !== 'headers') {
        value = Value.Default(schema, Value.Convert(schema, { ...(data as object | null) }));
      }
      if (checker.Check(value)) return httpPart === 'headers' ? true : { value };
      const first = checker.Errors(value).First();
      return { error: first ? describe(part, first) : new BadRequestError(`/${part}`, `/${part} is invalid`) };
    } catch {
      // A validator that throws would be reported by Fastify as a 500; a value TypeBox cannot
      // even walk is simply invalid.
      return { error: new BadRequestError(`/${part}`, `/${part} is invalid`) };
    }
  };
};

function describe(part: string, error: ValueError): BadRequestError {
  const field = `/${part}${error.path}`;
  return new BadRequestError(field, `${field} ${phrase(error)}`);
}

function phrase(error: ValueError): string {
  const schema = error.schema as Record<string, unknown>;
  const description = typeof schema.description === 'string' ? ` (${schema.description})` : '';
  switch (error.type) {
    case ValueErrorType.Boolean:
      return 'must be boolean';
    case ValueErrorType.Integer:
      return `must be an integer${description}`;
    case ValueErrorType.Number:
      return `must be a number${description}`;
    case ValueErrorType.String:
      return `must be a string${description}`;
    case ValueErrorType.Object:
      return 'must be a JSON object';
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.NumberMinimum:
      return `must be at least ${String(schema.minimum)}`;
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.NumberMaximum:
      return `must be at most ${String(schema.maximum)}`;
    case ValueErrorType.StringMinLength:
      return `must be at least ${String(schema.minLength)} characters`;
    case ValueErrorType.StringMaxLength:
      return `must be at most ${String(schema.maxLength)} characters`;
    case ValueErrorType.StringPattern:
      return `is not valid${description || ` (must match ${String(schema.pattern)})`}`;
    case ValueErrorType.ObjectRequiredProperty:
      return 'is required';
    case ValueErrorType.ObjectAdditionalProperties:
      return 'is not a known field';
    case ValueErrorType.Union:
    case ValueErrorType.Literal: {
      const choices = literals(schema);
      return choices.length > 0 ? `must be one of ${choices.join(', ')}` : `is not valid${description}`;
    }
    default:
      return `is not valid: ${error.message.toLowerCase()}`;
  }
}

function literals(schema: Record<string, unknown>): string[] {
  if ('const' in schema) return [String(schema.const)];
  const anyOf = schema.anyOf;
  if (!Array.isArray(anyOf)) return [];
  return anyOf.flatMap((s: Record<string, unknown>) => ('const' in s ? [String(s.const)] : []));
}
