// The documentation's Swift snippets are compiled into this target: the DocSnippets plugin
// generates them from README.md and Sources/Uring/Uring.docc/*.md at every build (see
// Tests/DocSnippets/Generator/main.swift). UringTests runs the client and shutdown examples.
