// Command loopback is the reference filesystem for mount_test: go-fuse's
// stock loopback mounted with the options mergefs uses (DirectMount,
// passthrough disabled), so posixtest results can be compared case by case.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	os.Exit(run())
}

func run() int {
	atomicTrunc := flag.Bool("atomic-o-trunc", false, "negotiate CAP_ATOMIC_O_TRUNC as mergefs does")
	debug := flag.Bool("debug", false, "log every FUSE request")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback [flags] BACKING MOUNTPOINT")
		return 2
	}
	backing, mountpoint := flag.Arg(0), flag.Arg(1)

	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: %v\n", err)
		return 1
	}
	opts := &fs.Options{
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			DirectMountStrict:    true,
			FsName:               backing,
			Name:                 "loopback",
			Debug:                *debug,
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
	}
	if *atomicTrunc {
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_ATOMIC_O_TRUNC
	}
	server, err := fs.Mount(mountpoint, root, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: mount: %v\n", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "loopback: ready")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		if err := server.Unmount(); err != nil {
			fmt.Fprintf(os.Stderr, "loopback: unmount: %v\n", err)
		}
	}()
	server.Wait()
	return 0
}
