package dev.pocusedge.demo

import android.content.Intent
import android.graphics.BitmapFactory
import android.os.Build
import android.os.Bundle
import android.os.SystemClock
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.core.content.FileProvider
import dev.pocusedge.core.Json
import dev.pocusedge.core.LatencyStats
import java.io.File
import java.time.Instant
import kotlin.concurrent.thread

/** Warm-up + N timed inferences; writes one `pocus-bench-row/1` JSON file and offers to share it. */
class BenchmarkActivity : AppCompatActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val view = TextView(this).also { setContentView(it) }
        val delegate = Delegate.valueOf(intent.getStringExtra("delegate") ?: "CPU")
        val threads = intent.getIntExtra("threads", 4)
        val warmup = 10
        val runs = 100
        view.text = "benchmarking ($delegate, $threads threads)…"
        thread {
            val check = BundleModel(this, delegate, threads).use { it.selfTest }  // once, outside the timed cold start
            if (!check.passed()) {
                runOnUiThread { view.text = check.summary() }
                return@thread
            }
            val t0 = SystemClock.elapsedRealtimeNanos()
            val model = BundleModel(this, delegate, threads)
            val bitmap = assets.open("sample.png").use { BitmapFactory.decodeStream(it) }
            val input = model.input(model.gray(bitmap))
            model.run(input)
            val coldMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            repeat(warmup) { input.rewind(); model.run(input) }
            val samples = DoubleArray(runs) {
                input.rewind()
                val s = SystemClock.elapsedRealtimeNanos()
                model.run(input)
                (SystemClock.elapsedRealtimeNanos() - s) / 1e6
            }
            val stats = LatencyStats(samples)
            val device = LatencyStats.androidDevice(Build.MANUFACTURER, Build.MODEL, Build.SOC_MODEL, Build.VERSION.RELEASE)
            val row = stats.benchRow(model.manifest, "litert ${delegate.name.lowercase()}", threads, device, coldMs, warmup,
                Instant.now().toString())
            model.close()
            val dir = File(getExternalFilesDir(null), "benchmarks").also { it.mkdirs() }
            val file = File(dir, "bench-${System.currentTimeMillis()}.json")
            file.writeText(Json.write(mapOf("schema" to "pocus-bench-row/1", "rows" to listOf(row))))
            runOnUiThread {
                view.text = "p50 ${"%.2f".format(stats.p50)} ms, p90 ${"%.2f".format(stats.p90)}, p99 ${"%.2f".format(stats.p99)}, " +
                    "cold start ${"%.0f".format(coldMs)} ms\nwritten to $file"
                val uri = FileProvider.getUriForFile(this, "dev.pocusedge.demo.files", file)
                startActivity(Intent.createChooser(Intent(Intent.ACTION_SEND).setType("application/json")
                    .putExtra(Intent.EXTRA_STREAM, uri).addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION), "Share benchmark"))
            }
        }
    }
}
