//go:build !unix

package main

// raiseFileLimit does nothing where there is no open-file limit to raise;
// it returns 0 (unknown).
func raiseFileLimit() uint64 { return 0 }
