//go:build linux

package filesync

import (
	"io/fs"
	"syscall"
)

// fileIDOf returns what identifies the content of the file fi describes.
func fileIDOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{
		Size: fi.Size(), MTime: fi.ModTime().UnixNano(), CTime: st.Ctim.Nano(),
		Dev: uint64(st.Dev), Ino: uint64(st.Ino),
	}, true
}
