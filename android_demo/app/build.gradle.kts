plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.pocusedge.demo"
    compileSdk = 35
    defaultConfig {
        applicationId = "dev.pocusedge.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    androidResources { noCompress += "tflite" }  // the interpreter memory-maps the model
}

dependencies {
    implementation(project(":core"))
    implementation("com.google.ai.edge.litert:litert:1.4.0")
    implementation("com.google.ai.edge.litert:litert-gpu:1.4.0")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.activity:activity-ktx:1.9.3")
}

// ./gradlew :app:copyBundle -PpocusBundle=/path/to/bundle  (a tflite bundle from pocus-export)
tasks.register<Copy>("copyBundle") {
    val bundle = providers.gradleProperty("pocusBundle")
    from(bundle.map { file(it) }) { include("manifest.json", "model.tflite", "parity.json", "reference/**") }
    from(rootDir.resolve("../pocus_edge/runtime/manifest.schema.json"))
    into(layout.projectDirectory.dir("src/main/assets/bundle"))
}
