import CofferCore
import CofferServerCore

extension FuzzHarness {
    /// `ServerConfig.parse`, cofferd's HCL configuration file, then `validate()`.
    ///
    /// Checks that an error naming a line names one of the file's lines.
    public static let serverConfig = FuzzHarness(
        name: "server-config",
        summary: "ServerConfig.parse and validate (cofferd's configuration file)"
    ) { input in
        let text = String(decoding: input, as: UTF8.self)
        do throws(ConfigError) {
            let config = try ServerConfig.parse(text)
            try config.validate()
            _ = try config.listener.hostAndPort()
        } catch {
            if let line = error.line {
                let shape = TextShape(text)
                guard line >= 1 && line <= shape.lines else {
                    return "configuration error at line \(line) of a \(shape.lines)-line file"
                }
            }
        }
        return nil
    }
}
