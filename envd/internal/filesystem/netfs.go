package filesystem

import (
	"golang.org/x/sys/unix"
)

// networkFS names the statfs f_type magics of filesystems whose changes can
// happen on another machine, where inotify sees only local writes.
var networkFS = map[uint32]string{
	unix.NFS_SUPER_MAGIC:  "nfs",
	unix.SMB_SUPER_MAGIC:  "smb",
	unix.SMB2_SUPER_MAGIC: "smb2",
	unix.CIFS_SUPER_MAGIC: "cifs",
	unix.FUSE_SUPER_MAGIC: "fuse", // sshfs, s3fs, gcsfuse, ...
	unix.V9FS_MAGIC:       "9p",
	unix.CEPH_SUPER_MAGIC: "ceph",
	unix.AFS_SUPER_MAGIC:  "afs",
	unix.AFS_FS_MAGIC:     "afs",
	unix.CODA_SUPER_MAGIC: "coda",
	unix.NCP_SUPER_MAGIC:  "ncp",
	0x47504653:            "gpfs",
	0x0BD00BD0:            "lustre",
	0x013111A8:            "ibrix",
	0x19830326:            "fhgfs",
}

// networkMount reports the network filesystem path lives on, or "" when it
// is local.
func networkMount(path string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", err
	}
	return networkFS[uint32(st.Type)], nil
}
