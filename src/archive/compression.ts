import type { Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { CompressionAlgorithm } from '../config/schema.ts';

export interface CompressionSettings {
  algorithm: CompressionAlgorithm;
  level: number;
}

/** Output buffer size: larger than zlib's 16 KiB default, fewer thread-pool round trips. */
const OUTPUT_CHUNK = 256 * 1024;

/** A compressing Transform, or undefined for `none`. zstd is Node 24's native zlib binding. */
export function createCompressor(settings: CompressionSettings): Transform | undefined {
  switch (settings.algorithm) {
    case 'zstd':
      return zlib.createZstdCompress({ chunkSize: OUTPUT_CHUNK, params: { [zlib.constants.ZSTD_c_compressionLevel]: settings.level } });
    case 'gzip':
      return zlib.createGzip({ chunkSize: OUTPUT_CHUNK, level: settings.level });
    case 'none':
      return undefined;
  }
}

export function createDecompressor(algorithm: CompressionAlgorithm): Transform | undefined {
  switch (algorithm) {
    case 'zstd':
      return zlib.createZstdDecompress();
    case 'gzip':
      return zlib.createGunzip();
    case 'none':
      return undefined;
  }
}

