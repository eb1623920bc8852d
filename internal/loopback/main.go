// Command loopback is the plain FUSE filesystem that mergefs is measured and
// tested against: go-fuse's stock loopback node mounted with exactly the
// options mergefs mounts with (mergefs/fs.MountOptions: DirectMountStrict,
// passthrough disabled, atomic O_TRUNC, default_permissions, the same entry
// and attribute timeouts), so that what differs is what mergefs itself does.
// scripts/bench uses it as the FUSE floor; mount_test as the reference for
// posixtest and as the control that must lose updates.
//
// Usage: loopback [-debug] BACKING MOUNTPOINT. Runs in the foreground and
// prints "loopback: ready" once mounted; SIGINT or SIGTERM unmounts (lazily
// if busy) and exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	mergefs "github.com/mergefs/mergefs/fs"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fl := flag.NewFlagSet("loopback", flag.ContinueOnError)
	debug := fl.Bool("debug", false, "log every FUSE request")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback [-debug] BACKING MOUNTPOINT")
		return 2
	}
	backing, mountpoint := fl.Arg(0), fl.Arg(1)
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: %v\n", err)
		return 1
	}
	opts := mergefs.MountOptions(backing, false)
	opts.MountOptions.Name = "loopback"
	opts.Debug = *debug
	// Caught before the mount exists, as mergefs does: a signal that arrives
	// as the mount becomes ready must unmount it.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	server, err := gofs.Mount(mountpoint, root, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: mount %s: %v\n", mountpoint, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "loopback: ready: serving %s at %s\n", backing, mountpoint)

	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-signals:
	}
	if err := server.Unmount(); err != nil {
		fmt.Fprintf(os.Stderr, "loopback: unmount: %v; detaching lazily\n", err)
		if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil {
			fmt.Fprintf(os.Stderr, "loopback: lazy unmount: %v\n", err)
		}
	}
	<-done
	return 0
}
