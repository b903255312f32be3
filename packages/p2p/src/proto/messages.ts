import { decodeMessage, encodeMessage, enumeration, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface Announce {
  format: number
  peer: string
  version: bigint
  digest: Uint8Array<ArrayBuffer>
  size: bigint
  task?: string
}

export namespace Announce {
  let _codec: Codec<Announce>

  export const codec = (): Codec<Announce> => {
    if (_codec == null) {
      _codec = message<Announce>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.format != null && obj.format !== 0)) {
          w.uint32(8)
          w.uint32(obj.format)
        }

        if ((obj.peer != null && obj.peer !== '')) {
          w.uint32(18)
          w.string(obj.peer)
        }

        if ((obj.version != null && obj.version !== 0n)) {
          w.uint32(24)
          w.uint64(obj.version)
        }

        if ((obj.digest != null && obj.digest.byteLength > 0)) {
          w.uint32(34)
          w.bytes(obj.digest)
        }

        if ((obj.size != null && obj.size !== 0n)) {
          w.uint32(40)
          w.uint64(obj.size)
        }

        if (obj.task != null) {
          w.uint32(50)
          w.string(obj.task)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          format: 0,
          peer: '',
          version: 0n,
          digest: uint8ArrayAlloc(0),
          size: 0n
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.format = reader.uint32()
              break
            }
            case 2: {
              obj.peer = reader.string()
              break
            }
            case 3: {
              obj.version = reader.uint64()
              break
            }
            case 4: {
              obj.digest = reader.bytes()
              break
            }
            case 5: {
              obj.size = reader.uint64()
              break
            }
            case 6: {
              obj.task = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.format`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.peer`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.version`,
                value: reader.uint64()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.digest`,
                value: reader.bytes()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.size`,
                value: reader.uint64()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.task`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface AnnounceFormatFieldEvent {
    field: '$.format'
    value: number
  }

  export interface AnnouncePeerFieldEvent {
    field: '$.peer'
    value: string
  }

  export interface AnnounceVersionFieldEvent {
    field: '$.version'
    value: bigint
  }

  export interface AnnounceDigestFieldEvent {
    field: '$.digest'
    value: Uint8Array<ArrayBuffer>
  }

  export interface AnnounceSizeFieldEvent {
    field: '$.size'
    value: bigint
  }

  export interface AnnounceTaskFieldEvent {
    field: '$.task'
    value: string
  }

  export function encode (obj: Partial<Announce>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Announce.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Announce>): Announce {
    return decodeMessage(buf, Announce.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Announce>): Generator<AnnounceFormatFieldEvent | AnnouncePeerFieldEvent | AnnounceVersionFieldEvent | AnnounceDigestFieldEvent | AnnounceSizeFieldEvent | AnnounceTaskFieldEvent> {
    return streamMessage(buf, Announce.codec(), opts)
  }
}

export interface HeadRequest {
  format: number
  minVersion: bigint
  chunkSize?: number
  offset?: bigint
  resumeDigest?: Uint8Array<ArrayBuffer>
  task?: string
}

export namespace HeadRequest {
  let _codec: Codec<HeadRequest>

  export const codec = (): Codec<HeadRequest> => {
    if (_codec == null) {
      _codec = message<HeadRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.format != null && obj.format !== 0)) {
          w.uint32(8)
          w.uint32(obj.format)
        }

        if ((obj.minVersion != null && obj.minVersion !== 0n)) {
          w.uint32(16)
          w.uint64(obj.minVersion)
        }

        if (obj.chunkSize != null) {
          w.uint32(24)
          w.uint32(obj.chunkSize)
        }

        if (obj.offset != null) {
          w.uint32(32)
          w.uint64(obj.offset)
        }

        if (obj.resumeDigest != null) {
          w.uint32(42)
          w.bytes(obj.resumeDigest)
        }

        if (obj.task != null) {
          w.uint32(50)
          w.string(obj.task)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          format: 0,
          minVersion: 0n
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.format = reader.uint32()
              break
            }
            case 2: {
              obj.minVersion = reader.uint64()
              break
            }
            case 3: {
              obj.chunkSize = reader.uint32()
              break
            }
            case 4: {
              obj.offset = reader.uint64()
              break
            }
            case 5: {
              obj.resumeDigest = reader.bytes()
              break
            }
            case 6: {
              obj.task = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.format`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.minVersion`,
                value: reader.uint64()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.chunkSize`,
                value: reader.uint32()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.offset`,
                value: reader.uint64()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.resumeDigest`,
                value: reader.bytes()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.task`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface HeadRequestFormatFieldEvent {
    field: '$.format'
    value: number
  }

  export interface HeadRequestMinVersionFieldEvent {
    field: '$.minVersion'
    value: bigint
  }

  export interface HeadRequestChunkSizeFieldEvent {
    field: '$.chunkSize'
    value: number
  }

  export interface HeadRequestOffsetFieldEvent {
    field: '$.offset'
    value: bigint
  }

  export interface HeadRequestResumeDigestFieldEvent {
    field: '$.resumeDigest'
    value: Uint8Array<ArrayBuffer>
  }

  export interface HeadRequestTaskFieldEvent {
    field: '$.task'
    value: string
  }

  export function encode (obj: Partial<HeadRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, HeadRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<HeadRequest>): HeadRequest {
    return decodeMessage(buf, HeadRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<HeadRequest>): Generator<HeadRequestFormatFieldEvent | HeadRequestMinVersionFieldEvent | HeadRequestChunkSizeFieldEvent | HeadRequestOffsetFieldEvent | HeadRequestResumeDigestFieldEvent | HeadRequestTaskFieldEvent> {
    return streamMessage(buf, HeadRequest.codec(), opts)
  }
}

export interface HeadResponse {
  available: boolean
  version: bigint
  size: bigint
  digest: Uint8Array<ArrayBuffer>
  chunkSize?: number
  offset?: bigint
  task?: string
}

export namespace HeadResponse {
  let _codec: Codec<HeadResponse>

  export const codec = (): Codec<HeadResponse> => {
    if (_codec == null) {
      _codec = message<HeadResponse>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.available != null && obj.available !== false)) {
          w.uint32(8)
          w.bool(obj.available)
        }

        if ((obj.version != null && obj.version !== 0n)) {
          w.uint32(16)
          w.uint64(obj.version)
        }

        if ((obj.size != null && obj.size !== 0n)) {
          w.uint32(24)
          w.uint64(obj.size)
        }

        if ((obj.digest != null && obj.digest.byteLength > 0)) {
          w.uint32(34)
          w.bytes(obj.digest)
        }

        if (obj.chunkSize != null) {
          w.uint32(40)
          w.uint32(obj.chunkSize)
        }

        if (obj.offset != null) {
          w.uint32(48)
          w.uint64(obj.offset)
        }

        if (obj.task != null) {
          w.uint32(58)
          w.string(obj.task)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          available: false,
          version: 0n,
          size: 0n,
          digest: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.available = reader.bool()
              break
            }
            case 2: {
              obj.version = reader.uint64()
              break
            }
            case 3: {
              obj.size = reader.uint64()
              break
            }
            case 4: {
              obj.digest = reader.bytes()
              break
            }
            case 5: {
              obj.chunkSize = reader.uint32()
              break
            }
            case 6: {
              obj.offset = reader.uint64()
              break
            }
            case 7: {
              obj.task = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.available`,
                value: reader.bool()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.version`,
                value: reader.uint64()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.size`,
                value: reader.uint64()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.digest`,
                value: reader.bytes()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.chunkSize`,
                value: reader.uint32()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.offset`,
                value: reader.uint64()
              }
              break
            }
            case 7: {
              yield {
                field: `${prefix}.task`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface HeadResponseAvailableFieldEvent {
    field: '$.available'
    value: boolean
  }

  export interface HeadResponseVersionFieldEvent {
    field: '$.version'
    value: bigint
  }

  export interface HeadResponseSizeFieldEvent {
    field: '$.size'
    value: bigint
  }

  export interface HeadResponseDigestFieldEvent {
    field: '$.digest'
    value: Uint8Array<ArrayBuffer>
  }

  export interface HeadResponseChunkSizeFieldEvent {
    field: '$.chunkSize'
    value: number
  }

  export interface HeadResponseOffsetFieldEvent {
    field: '$.offset'
    value: bigint
  }

  export interface HeadResponseTaskFieldEvent {
    field: '$.task'
    value: string
  }

  export function encode (obj: Partial<HeadResponse>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, HeadResponse.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<HeadResponse>): HeadResponse {
    return decodeMessage(buf, HeadResponse.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<HeadResponse>): Generator<HeadResponseAvailableFieldEvent | HeadResponseVersionFieldEvent | HeadResponseSizeFieldEvent | HeadResponseDigestFieldEvent | HeadResponseChunkSizeFieldEvent | HeadResponseOffsetFieldEvent | HeadResponseTaskFieldEvent> {
    return streamMessage(buf, HeadResponse.codec(), opts)
  }
}

export interface FedAvgRequest {
  format: number
  kind: FedAvgRequest.Kind
  round: bigint
  samples: bigint
  rank: number
}

export namespace FedAvgRequest {
  export enum Kind {
    GET_GLOBAL = 'GET_GLOBAL',
    UPLOAD = 'UPLOAD'
  }

  enum __KindValues {
    GET_GLOBAL = 0,
    UPLOAD = 1
  }

  export namespace Kind {
    export const codec = (): Codec<Kind> => {
      return enumeration<Kind>(__KindValues)
    }
  }

  let _codec: Codec<FedAvgRequest>

  export const codec = (): Codec<FedAvgRequest> => {
    if (_codec == null) {
      _codec = message<FedAvgRequest>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.format != null && obj.format !== 0)) {
          w.uint32(8)
          w.uint32(obj.format)
        }

        if (obj.kind != null && __KindValues[obj.kind] !== 0) {
          w.uint32(16)
          FedAvgRequest.Kind.codec().encode(obj.kind, w)
        }

        if ((obj.round != null && obj.round !== 0n)) {
          w.uint32(24)
          w.uint64(obj.round)
        }

        if ((obj.samples != null && obj.samples !== 0n)) {
          w.uint32(32)
          w.uint64(obj.samples)
        }

        if ((obj.rank != null && obj.rank !== 0)) {
          w.uint32(40)
          w.uint32(obj.rank)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          format: 0,
          kind: Kind.GET_GLOBAL,
          round: 0n,
          samples: 0n,
          rank: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.format = reader.uint32()
              break
            }
            case 2: {
              obj.kind = FedAvgRequest.Kind.codec().decode(reader)
              break
            }
            case 3: {
              obj.round = reader.uint64()
              break
            }
            case 4: {
              obj.samples = reader.uint64()
              break
            }
            case 5: {
              obj.rank = reader.uint32()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.format`,
                value: reader.uint32()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.kind`,
                value: FedAvgRequest.Kind.codec().decode(reader)
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.round`,
                value: reader.uint64()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.samples`,
                value: reader.uint64()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.rank`,
                value: reader.uint32()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface FedAvgRequestFormatFieldEvent {
    field: '$.format'
    value: number
  }

  export interface FedAvgRequestKindFieldEvent {
    field: '$.kind'
    value: FedAvgRequest.Kind
  }

  export interface FedAvgRequestRoundFieldEvent {
    field: '$.round'
    value: bigint
  }

  export interface FedAvgRequestSamplesFieldEvent {
    field: '$.samples'
    value: bigint
  }

  export interface FedAvgRequestRankFieldEvent {
    field: '$.rank'
    value: number
  }

  export function encode (obj: Partial<FedAvgRequest>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, FedAvgRequest.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<FedAvgRequest>): FedAvgRequest {
    return decodeMessage(buf, FedAvgRequest.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<FedAvgRequest>): Generator<FedAvgRequestFormatFieldEvent | FedAvgRequestKindFieldEvent | FedAvgRequestRoundFieldEvent | FedAvgRequestSamplesFieldEvent | FedAvgRequestRankFieldEvent> {
    return streamMessage(buf, FedAvgRequest.codec(), opts)
  }
}

export interface FedAvgResponse {
  ok: boolean
  round: bigint
  hasModel: boolean
  finished: boolean
  error: string
  needUpload: boolean
}

export namespace FedAvgResponse {
  let _codec: Codec<FedAvgResponse>

  export const codec = (): Codec<FedAvgResponse> => {
    if (_codec == null) {
      _codec = message<FedAvgResponse>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.ok != null && obj.ok !== false)) {
          w.uint32(8)
          w.bool(obj.ok)
        }

        if ((obj.round != null && obj.round !== 0n)) {
          w.uint32(16)
          w.uint64(obj.round)
        }

        if ((obj.hasModel != null && obj.hasModel !== false)) {
          w.uint32(24)
          w.bool(obj.hasModel)
        }

        if ((obj.finished != null && obj.finished !== false)) {
          w.uint32(32)
          w.bool(obj.finished)
        }

        if ((obj.error != null && obj.error !== '')) {
          w.uint32(42)
          w.string(obj.error)
        }

        if ((obj.needUpload != null && obj.needUpload !== false)) {
          w.uint32(48)
          w.bool(obj.needUpload)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          ok: false,
          round: 0n,
          hasModel: false,
          finished: false,
          error: '',
          needUpload: false
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.ok = reader.bool()
              break
            }
            case 2: {
              obj.round = reader.uint64()
              break
            }
            case 3: {
              obj.hasModel = reader.bool()
              break
            }
            case 4: {
              obj.finished = reader.bool()
              break
            }
            case 5: {
              obj.error = reader.string()
              break
            }
            case 6: {
              obj.needUpload = reader.bool()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.ok`,
                value: reader.bool()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.round`,
                value: reader.uint64()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.hasModel`,
                value: reader.bool()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.finished`,
                value: reader.bool()
              }
              break
            }
            case 5: {
              yield {
                field: `${prefix}.error`,
                value: reader.string()
              }
              break
            }
            case 6: {
              yield {
                field: `${prefix}.needUpload`,
                value: reader.bool()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface FedAvgResponseOkFieldEvent {
    field: '$.ok'
    value: boolean
  }

  export interface FedAvgResponseRoundFieldEvent {
    field: '$.round'
    value: bigint
  }

  export interface FedAvgResponseHasModelFieldEvent {
    field: '$.hasModel'
    value: boolean
  }

  export interface FedAvgResponseFinishedFieldEvent {
    field: '$.finished'
    value: boolean
  }

  export interface FedAvgResponseErrorFieldEvent {
    field: '$.error'
    value: string
  }

  export interface FedAvgResponseNeedUploadFieldEvent {
    field: '$.needUpload'
    value: boolean
  }

  export function encode (obj: Partial<FedAvgResponse>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, FedAvgResponse.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<FedAvgResponse>): FedAvgResponse {
    return decodeMessage(buf, FedAvgResponse.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<FedAvgResponse>): Generator<FedAvgResponseOkFieldEvent | FedAvgResponseRoundFieldEvent | FedAvgResponseHasModelFieldEvent | FedAvgResponseFinishedFieldEvent | FedAvgResponseErrorFieldEvent | FedAvgResponseNeedUploadFieldEvent> {
    return streamMessage(buf, FedAvgResponse.codec(), opts)
  }
}
