import {
  AppError,
  ERROR_CODES,
  isAppError,
  type ErrorBody,
  type ErrorCode,
} from '@agentcom/shared';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../logger';

/** Maps Fastify's own error codes (body parsing, limits) to agentcom's stable codes. */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'E_PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'E_VALIDATION',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'E_VALIDATION',
  FST_ERR_CTP_INVALID_JSON_BODY: 'E_VALIDATION',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'E_VALIDATION',
  FST_ERR_VALIDATION: 'E_VALIDATION',
};

export function errorBody(code: ErrorCode, message: string, details?: unknown): ErrorBody {
  return { error: { code, message, ...(details === undefined ? {} : { details }) } };
}

/** The one error handler: every failure leaves as `{error:{code,message}}` with the code's status. */
export function createErrorHandler(logger: Logger) {
  return (err: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): void => {
    if (isAppError(err)) {
      void reply.status(err.httpStatus).send(errorBody(err.code, err.message, err.details));
      return;
    }
    const fastifyCode = (err as FastifyError).code;
    const mapped = fastifyCode ? FASTIFY_CODES[fastifyCode] : undefined;
    const status = (err as FastifyError).statusCode;
    if (mapped) {
      const message =
        fastifyCode === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? unsupportedMediaType(request.headers['content-type'])
          : err.message;
      void reply.status(ERROR_CODES[mapped].httpStatus).send(errorBody(mapped, message));
      return;
    }
    if (status !== undefined && status >= 400 && status < 500) {
      void reply.status(400).send(errorBody('E_VALIDATION', err.message));
      return;
    }
    logger.error({ err: err.message, stack: err.stack }, 'request failed');
    const internal = new AppError('E_INTERNAL');
    void reply.status(internal.httpStatus).send(errorBody(internal.code, internal.message));
  };
}

/** Fastify says only "Unsupported Media Type": name the type received and the one expected. */
function unsupportedMediaType(contentType: string | undefined): string {
  if (contentType === undefined) return 'the body has no Content-Type: send it as application/json';
  const shown = contentType.length > 100 ? `${contentType.slice(0, 100)}…` : contentType;
  return `Content-Type ${JSON.stringify(shown)} is not supported: send the body as application/json`;
}
