//go:build !wired

package main

const buildTags = ""
