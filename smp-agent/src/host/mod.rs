//! Facts about the host read from procfs/sysfs: kernel, BTF, capabilities, sockets.
