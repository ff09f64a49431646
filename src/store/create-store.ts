import type { StoreConfig } from '../config/schema.ts';
import { FsStore } from './fs-store.ts';
import { S3Store } from './s3-store.ts';
import type { BackupStore } from './store.ts';

export function createStore(config: StoreConfig): BackupStore {
  switch (config.kind) {
    case 'fs':
      return new FsStore(config.dir);
    case 's3':
      return new S3Store(config);
  }
}
