import Foundation
import PackagePlugin

/// Compiles the documentation's Swift snippets: every ```swift block of README.md and of the DocC
/// articles becomes code in the target this plugin is applied to (UringDocSnippets), so when the
/// docs stop compiling, the build stops. See Tests/DocSnippets/Generator/main.swift for the rules.
@main
struct DocSnippetsPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let package = context.package.directoryURL
        let docc = package.appending(path: "Sources/Uring/Uring.docc")
        let articles = try FileManager.default.contentsOfDirectory(atPath: docc.path)
            .filter { $0.hasSuffix(".md") }
            .sorted()
            .map { docc.appending(path: $0) }
        let inputs = [package.appending(path: "README.md")] + articles
        let output = context.pluginWorkDirectoryURL.appending(path: "DocSnippets.swift")
        return [
            .buildCommand(
                displayName: "Extracting the documentation's Swift snippets",
                executable: try context.tool(named: "doc-snippets").url,
                arguments: [output.path] + inputs.map(\.path),
                inputFiles: inputs,
                outputFiles: [output])
        ]
    }
}
