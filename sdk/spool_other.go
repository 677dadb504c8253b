//go:build !unix

package sdk

import "os"

// lockFile does nothing on systems without flock: do not share an outbox
// directory between processes there.
func lockFile(*os.File) error { return nil }

// syncDir does nothing where directories cannot be synced; renames are
// made durable by the file system itself (NTFS journals them).
func syncDir(string) error { return nil }
