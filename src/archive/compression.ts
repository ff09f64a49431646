import type { Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { CompressionAlgorithm } from '../config/schema.ts';

export interface CompressionSettings {
  algorithm: CompressionAlgorithm;
  level: number;
}

/** A compressing Transform, or undefined for `none`. zstd is Node 24's native zlib binding. */
export function createCompressor(settings: CompressionSettings): Transform | undefined {
  switch (settings.algorithm) {
    case 'zstd':
      return zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: settings.level } });
    case 'gzip':
      return zlib.createGzip({ level: settings.level });
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

