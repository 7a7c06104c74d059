// CloudEvents 1.0 in structured content mode over HTTP: one JSON object per request with
// `Content-Type: application/cloudevents+json` (spec: cloudevents/spec, http-protocol-binding.md).
import { createHmac } from 'node:crypto';
import type { OutboxEvent } from '../metadata/outbox.ts';

export const CLOUDEVENTS_CONTENT_TYPE = 'application/cloudevents+json; charset=utf-8';
export const TYPE_PREFIX = 'dev.trellis.';
export const SIGNATURE_HEADER = 'X-Trellis-Signature';

export interface CloudEvent {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  time: string;
  subject?: string;
  datacontenttype: 'application/json';
  data: Record<string, unknown>;
}

export function toCloudEvent(event: OutboxEvent, source: string): CloudEvent {
  const cloudEvent: CloudEvent = {
    specversion: '1.0', id: event.id, source, type: `${TYPE_PREFIX}${event.type}`, time: new Date(event.time).toISOString(),
    datacontenttype: 'application/json', data: event.data,
  };
  if (event.subject) cloudEvent.subject = event.subject;
  return cloudEvent;
}

/** `sha256=<hex>`: the HMAC-SHA256 of the exact body bytes under the webhook's secret. */
export function signature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}
