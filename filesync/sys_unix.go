//go:build unix

package filesync

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// readFlags opens files for reading without blocking on a FIFO that
// replaced a regular file after the walk (the caller checks the type).
const readFlags = os.O_RDONLY | syscall.O_NONBLOCK

// ownerOf returns the owner and group of fi.
func ownerOf(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// chownDenied reports whether a chown failed because this process may not
// give files away (it does not run as root, or the id is not mapped in its
// user namespace): the file then keeps the worker's own owner.
func chownDenied(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL)
}

// dirNotEmpty reports whether a removal failed because the directory has
// entries.
func dirNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}

// absent reports whether a lookup failed because the path does not exist,
// or one of its parents is not a directory.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
