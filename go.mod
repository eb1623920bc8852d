module github.com/mergefs/mergefs

go 1.26

require (
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/tidwall/gjson v1.20.2 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.3.0 // indirect
	github.com/tidwall/sjson v1.2.9 // indirect
	golang.org/x/sys v0.28.0 // indirect
)
